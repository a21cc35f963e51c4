"""Turn a ``cellseg train`` run folder into a shipped demo model (resources/sample/model_*).

    .venv/bin/python packaging/make_demo_model.py RUN_DIR --out resources/sample/model_cascade
        [--checkpoint model_final.pth] [--set KEY VALUE]...

Writes ``config.yaml`` (the run's, with MODEL.WEIGHTS and OUTPUT_DIR cleared: they name the
machine that trained it) and ``model_final.pth`` holding only the model's weights in half
precision (``{"model": state_dict}``: half the bytes; the engine casts weights to the model's
dtype when it loads them). ``--set`` changes config keys for inference (e.g. the test size).
The training commands are in each model folder's README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--checkpoint", default="model_final.pth")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = p.parse_args(argv)
    from cellseg.core.config import load_config
    from cellseg.core.engine.checkpoint import read_checkpoint, state_dict_of

    cfg = load_config(args.run / "config.yaml", ["MODEL.WEIGHTS", "''", "OUTPUT_DIR", "''"]
                      + [v for kv in args.set for v in kv])
    weights = state_dict_of(read_checkpoint(args.run / args.checkpoint))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.yaml").write_text(cfg.dump())
    torch.save({"model": half}, args.out / "model_final.pth")
    size = (args.out / "model_final.pth").stat().st_size
    print(f"wrote {args.out / 'config.yaml'} and {args.out / 'model_final.pth'} "
          f"({size / 2**20:.1f} MiB, {len(half)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
