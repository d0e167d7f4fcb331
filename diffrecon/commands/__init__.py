"""Subcommands of the ``diffrecon`` CLI: one module each with ``add_parser(subparsers)`` and ``run(args)``."""
