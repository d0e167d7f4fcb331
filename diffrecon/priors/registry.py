"""Bundled priors, addressed by name: ``diffrecon.priors.load("head-64")``.

Each bundled prior is a ``<name>.safetensors`` + ``<name>.json`` pair in ``diffrecon/priors/weights/``
(installed as package data, so loading works offline on a fresh install).
"""

from __future__ import annotations

import os
import pathlib

from ..errors import CheckpointError

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"


def available() -> list[str]:
    """Names of the bundled priors."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".safetensors").exists())


def resolve(name_or_path: str | os.PathLike) -> pathlib.Path:
    """Stem path of a bundled name or of a user checkpoint (stem, .json or .safetensors)."""
    s = str(name_or_path)
    if s in available():
        return WEIGHTS_DIR / s
    p = pathlib.Path(s)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    if p.with_suffix(".json").exists() or p.with_suffix(".safetensors").exists() or os.sep in s or "/" in s:
        return p
    raise CheckpointError(
        f"no bundled prior named {s!r} and no checkpoint at {s}.json/.safetensors; "
        f"bundled priors: {available() or 'none'}"
    )


def load(name_or_path: str | os.PathLike, device="cpu"):
    """Load a bundled prior by name, or a diffrecon checkpoint from a path (see :mod:`.checkpoint`)."""
    from .checkpoint import load_prior

    return load_prior(resolve(name_or_path), device=device)
