"""One exception hierarchy for everything diffrecon raises on purpose.

Every message says what was expected and what was found, so a user can fix the call without reading
the source.
"""

from __future__ import annotations


class DiffreconError(Exception):
    """Base class of all diffrecon errors."""


class InputDataError(DiffreconError, ValueError):
    """Data has the wrong shape, dtype, or contains NaN/Inf, or does not match its geometry."""


class GeometryError(DiffreconError, ValueError):
    """An acquisition geometry is invalid (no views, non-finite angles, bad distances, ...)."""


class CheckpointError(DiffreconError):
    """A weights file or its config is missing, corrupt, or does not match the architecture."""


class FileFormatError(DiffreconError, OSError):
    """A file could not be read or does not follow the expected format."""


class OutputExistsError(DiffreconError, FileExistsError):
    """An output path exists and overwriting was not requested."""


class MissingDependencyError(DiffreconError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when the extra is absent
        raise MissingDependencyError(
            f"this feature needs the optional package '{module}'; install it with "
            f"`pip install 'diffrecon[{extra}]'` (import failed: {exc})"
        ) from exc
