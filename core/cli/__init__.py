"""The ``cellseg`` command line's dispatcher and core's subcommands, one module each.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Errors a user can act on (:class:`CellsegError`) print as one line on
stderr and exit with status 2; a cancelled run (Ctrl+C) exits 130.

This module knows only core's subcommands (``python -m cellseg.core.cli`` runs them). The
``cellseg`` program adds ``train`` (trainer) and ``doctor`` (app settings) in
:mod:`cellseg.app.cli`, the layer that may import both: core never loads them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping

from ..errors import CellsegError

#: core's subcommands: name -> module (imported when the parser is built)
SUBCOMMANDS: dict[str, str] = {
    "predict": "cellseg.core.cli.predict",
    "eval": "cellseg.core.cli.evaluate",
    "convert": "cellseg.core.cli.convert",
    "project": "cellseg.core.cli.project",
    "export": "cellseg.core.cli.export",
    "import": "cellseg.core.cli.importing",
}


DESCRIPTION = ("Detectron2-compatible cell instance segmentation: predict, evaluate, convert, "
               "manage projects and export.")


def build_parser(subcommands: Mapping[str, str] = SUBCOMMANDS,
                 description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """The ``cellseg`` parser with ``subcommands`` (name -> module name), in that order."""
    parser = argparse.ArgumentParser(prog="cellseg", description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in subcommands.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run_command=module.run)
    return parser


def main(argv: list[str] | None = None, subcommands: Mapping[str, str] = SUBCOMMANDS,
         description: str = DESCRIPTION) -> int:
    """Run one subcommand; returns the exit status (0 ok, 2 a user error, 130 cancelled)."""
    parser = build_parser(subcommands, description)
    args = parser.parse_args(argv)
    try:
        return int(args.run_command(args) or 0)
    except CellsegError as exc:
        print(f"cellseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cellseg {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
