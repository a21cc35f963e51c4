"""The ``cellseg`` program: core's subcommands plus ``train`` and ``doctor``.

The subcommand table is composed here, in the top layer, because ``train`` lives in
``cellseg.trainer`` and ``doctor`` reads the app's (Qt) settings: ``cellseg.core`` may import
neither, so its dispatcher (:mod:`cellseg.core.cli`) takes the table as an argument. Nothing
here imports Qt; ``doctor`` loads the settings class only when it runs.

    cellseg COMMAND ...                   (the console script)
    python -m cellseg.app.cli COMMAND ...  (how the app starts ``cellseg train`` in a child)
"""
from __future__ import annotations

import sys

from cellseg.core import cli as core_cli

SUBCOMMANDS: dict[str, str] = {
    **core_cli.SUBCOMMANDS,
    "train": "cellseg.trainer.cli",
    "doctor": "cellseg.app.doctor",
}


DESCRIPTION = ("Detectron2-compatible cell instance segmentation: predict, evaluate, convert, "
               "manage projects, export and train.")


def main(argv: list[str] | None = None) -> int:
    return core_cli.main(argv, SUBCOMMANDS, DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
