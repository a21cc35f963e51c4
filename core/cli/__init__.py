"""``cellseg`` command line: one module per subcommand.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Errors a user can act on (:class:`CellsegError`) print as one line on
stderr and exit with status 2; a cancelled run (Ctrl+C) exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CellsegError

# name -> module under cellseg.core.cli (the trainer's lives in cellseg.trainer.cli)
SUBCOMMANDS = {
    "predict": "cellseg.core.cli.predict",
    "eval": "cellseg.core.cli.evaluate",
    "convert": "cellseg.core.cli.convert",
    "project": "cellseg.core.cli.project",
    "export": "cellseg.core.cli.export",
    "import": "cellseg.core.cli.importing",
    "train": "cellseg.trainer.cli",
    "doctor": "cellseg.app.doctor",  # reads the app's Qt settings, so it lives in app/
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellseg",
        description="Detectron2-compatible cell instance segmentation: predict, evaluate, "
                    "convert, manage projects, export and train.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module
                raise
            continue  # subcommand not part of this build
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CellsegError as exc:
        print(f"cellseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cellseg {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
