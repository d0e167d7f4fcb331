"""The ``diffrecon`` command line.

Each sub-command lives in its own module under :mod:`diffrecon.commands` with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; this file only lists them, so heavy imports
happen only for the command that runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from .errors import DiffreconError

# (command name, module under diffrecon.commands)
COMMANDS: list[tuple[str, str]] = [
    ("demo", "demo"),
    ("simulate", "simulate"),
    ("reconstruct", "reconstruct"),
    ("info", "info"),
    ("hsi", "hsi"),
    ("train-prior", "train_prior"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffrecon",
        description="Reconstruct images from indirect measurements (CT, MRI, HSI, PDE) with exact operators "
        "and diffusion priors.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, module in COMMANDS:
        importlib.import_module(f"diffrecon.commands.{module}").add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every interruption path (solver state saved at the last
    completed step, temporary output files removed) runs for a batch scheduler's kill too."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except DiffreconError as exc:
        print(f"diffrecon {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no: permission, full disk, a directory where a file goes
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"diffrecon {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"diffrecon {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"diffrecon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
