"""Log messages and Python warnings of a ``diffrecon`` command, one line each on stderr.

The command line (:func:`diffrecon.cli.main`) runs every command inside :func:`configured`, which

* sets the level of the ``diffrecon`` logger from the top-level options: ``-q`` → ERROR, default →
  WARNING, ``-v`` → INFO, ``-vv`` (or more) → DEBUG, and prints its records as
  ``diffrecon: LEVEL: MESSAGE`` (the message folded onto one line);
* sends Python warnings through the same logger, as ``logging.captureWarnings`` does, but keeping
  their category and origin (``warnings.showwarning`` is replaced while the command runs): a warning
  is logged at WARNING, so shown by default, except a ``DeprecationWarning``, ``PendingDeprecationWarning``
  or ``FutureWarning`` raised outside diffrecon (torch, MONAI, ...): those are addressed to developers
  of the code that calls the deprecated API, so they are logged at INFO and shown from ``-v`` on (where
  Python's own filters, which hide deprecations outside ``__main__``, are opened for them too). Shown
  warnings read ``diffrecon: warning: MESSAGE``, third-party ones followed by ``[Category from
  package/file.py:line]``.

Library code logs with ``logging.getLogger("diffrecon")`` (or a child, ``"diffrecon.recon"``) and keeps
raising :class:`~diffrecon.errors.DiffreconError` for failures; outside the command line nothing is
configured, so a script decides what it sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import warnings
from collections.abc import Iterator

LOGGER_NAME = "diffrecon"
WARNINGS_LOGGER_NAME = "diffrecon.warnings"
# categories meant for the developers of the calling code, not for someone running a command
DEVELOPER_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def level_for(verbose: int = 0, quiet: bool = False) -> int:
    """The ``diffrecon`` logger level for ``-v`` given ``verbose`` times, or ``-q``."""
    if quiet:
        return logging.ERROR
    if verbose <= 0:
        return logging.WARNING
    return logging.INFO if verbose == 1 else logging.DEBUG


def add_arguments(parser) -> None:
    """The top-level ``-v/--verbose`` (repeatable) and ``-q/--quiet`` options (mutually exclusive; the
    destinations are ``verbose`` and ``log_quiet``, so the sub-commands' own ``--quiet`` is untouched)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more messages: -v adds progress notes and third-party deprecation warnings, "
                        "-vv debugging details")
    g.add_argument("-q", "--quiet", dest="log_quiet", action="store_true",
                   help="errors only: no warnings, notes or progress bars")


class OneLineFormatter(logging.Formatter):
    """``diffrecon: LEVEL: MESSAGE`` with the message (and any exception text) on one line; warnings
    captured from Python's ``warnings`` module read ``warning`` whatever level they were logged at."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text} ({self.formatException(record.exc_info)})"
        label = "warning" if getattr(record, "python_warning", False) else record.levelname.lower()
        return f"{LOGGER_NAME}: {label}: {one_line(text)}"


def one_line(text) -> str:
    """``text`` with its lines stripped and joined by single spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def is_third_party(filename: str | os.PathLike) -> bool:
    """Whether a warning's ``filename`` lies outside the diffrecon package."""
    try:
        path = pathlib.Path(filename).resolve()
    except (OSError, RuntimeError, ValueError):
        return True
    return _PACKAGE_DIR not in path.parents


def _origin(filename: str, lineno: int) -> str:
    """``package/file.py:line`` of a third-party file (its path below ``site-packages``), else the name."""
    parts = pathlib.PurePath(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:]) + f":{lineno}"
    return f"{pathlib.PurePath(filename).name}:{lineno}"


def log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` replacement: log the warning on ``diffrecon.warnings`` (see the module
    docstring for the levels)."""
    third_party = is_third_party(filename)
    level = logging.INFO if third_party and issubclass(category, DEVELOPER_CATEGORIES) else logging.WARNING
    text = one_line(message)
    if third_party:
        text = f"{text} [{category.__name__} from {_origin(str(filename), lineno)}]"
    logging.getLogger(WARNINGS_LOGGER_NAME).log(level, "%s", text, extra={"python_warning": True})


@contextlib.contextmanager
def configured(verbose: int = 0, quiet: bool = False, stream=None) -> Iterator[logging.Logger]:
    """Configure the ``diffrecon`` logger and the warnings hook for one command; restore both after.

    Args:
        verbose: how many ``-v`` were given.
        quiet: ``-q`` (errors only; wins over ``verbose``).
        stream: where the lines go (default: ``sys.stderr`` as it is when the block starts).

    Yields:
        the ``diffrecon`` logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(OneLineFormatter())
    saved = (logger.level, logger.propagate)
    level = level_for(verbose, quiet)
    logger.setLevel(level)
    logger.propagate = False  # one line per message, whatever the root logger has been given
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():  # restores the filters and showwarning on exit
            warnings.showwarning = log_warning
            if level <= logging.INFO:
                for category in (DeprecationWarning, PendingDeprecationWarning):
                    warnings.filterwarnings("default", category=category)
            yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
