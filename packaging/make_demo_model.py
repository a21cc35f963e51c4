"""Turn a ``cellseg train`` run folder into the shipped demo model (resources/sample/model).

    .venv/bin/python packaging/make_demo_model.py RUN_DIR [--checkpoint model_final.pth]

Writes ``config.yaml`` (the run's, with MODEL.WEIGHTS and OUTPUT_DIR cleared: they name the
machine that trained it) and ``model_final.pth`` holding only the model's weights in half
precision (``{"model": state_dict}``: half the bytes; the engine casts weights to the model's
dtype when it loads them). The training command is in resources/sample/model/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "resources" / "sample" / "model"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", default="model_final.pth")
    args = p.parse_args(argv)
    from cellseg.core.config import load_config
    from cellseg.core.engine.checkpoint import read_checkpoint, state_dict_of

    cfg = load_config(args.run / "config.yaml", ["MODEL.WEIGHTS", "''", "OUTPUT_DIR", "''"])
    weights = state_dict_of(read_checkpoint(args.run / args.checkpoint))
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "config.yaml").write_text(cfg.dump())
    torch.save({"model": half}, OUT / "model_final.pth")
    size = (OUT / "model_final.pth").stat().st_size
    print(f"wrote {OUT / 'config.yaml'} and {OUT / 'model_final.pth'} ({size / 2**20:.1f} MiB, "
          f"{len(half)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
