"""The ``diffrecon`` command line.

Each sub-command lives in its own module under :mod:`diffrecon.commands` with two functions,
``add_parser(subparsers)`` and ``run(args) -> int``; this file only lists them, so heavy imports
happen only for the command that runs.

Top-level options: ``-v``/``-vv`` (more messages), ``-q`` (errors only; also silences the command's
progress bars), given before the command (``diffrecon -v reconstruct ...``); see :mod:`diffrecon.logs`.
Errors are always one line, ``diffrecon CMD: error: MESSAGE``, exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from . import logs
from .errors import DiffreconError

# (command name, module under diffrecon.commands)
COMMANDS: list[tuple[str, str]] = [
    ("demo", "demo"),
    ("simulate", "simulate"),
    ("reconstruct", "reconstruct"),
    ("info", "info"),
    ("hsi", "hsi"),
    ("train-prior", "train_prior"),
    ("convert-prior", "convert_prior"),
]


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``diffrecon CMD: error: MESSAGE (see
    `diffrecon CMD --help`)``, exit status 2, like every other diffrecon error (argparse would print the
    whole usage block first). Sub-command parsers inherit the class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="diffrecon",
        description="Reconstruct images from indirect measurements (CT, MRI, HSI, PDE) with exact operators "
        "and diffusion priors.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    logs.add_arguments(parser)
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


def _leaf_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command that ``args`` selected, e.g. the one of ``hsi restore``."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or getattr(args, subs[0].dest, None) not in subs[0].choices:
            return parser
        parser = subs[0].choices[getattr(args, subs[0].dest)]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    leaf = _leaf_parser(parser, args)
    if extra:  # reported by the sub-command's parser, so the message names the command
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    name = leaf.prog  # "diffrecon simulate", "diffrecon hsi restore", ...
    if args.log_quiet:  # -q: no progress bars either (the commands' own --quiet / --no-progress)
        for dest in ("quiet", "no_progress"):
            if hasattr(args, dest):
                setattr(args, dest, True)
    try:
        with logs.configured(args.verbose, args.log_quiet) as log, _sigterm_as_interrupt():
            log.debug("%s: arguments %s", name, {k: v for k, v in vars(args).items() if k != "func"})
            return int(args.func(args) or 0)
    except DiffreconError as exc:
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no: permission, full disk, a directory where a file goes
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"{name}: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{name}: error: out of memory (a lower DIFFRECON_MAX_VOLUME_GB refuses such work before it "
              "starts)", file=sys.stderr)
        return 1
    except Terminated:
        print(f"{name}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def _one_line(message) -> str:
    """Error text on one line (some library messages quote multi-line output of other tools)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
