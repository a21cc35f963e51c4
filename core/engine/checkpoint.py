"""Loading Detectron2 checkpoints without executing code, and saving compatible ones.

* ``.pth``: ``torch.load(weights_only=True)`` -- PyTorch's restricted unpickler admits tensors
  and plain containers only.
* ``.pkl`` (model-zoo layout: numpy arrays under ``"model"`` or ``"blobs"``): our own
  unpickler that admits only numpy arrays/dtypes/scalars and plain containers; any other
  global (``os.system``, ``builtins.eval``, ...) is refused before anything runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

# (module, name) pairs a model-zoo pickle may reference: numpy array reconstruction only
_SAFE_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(f"refusing to load: the pickle references {module}.{name}, "
                              "which could run code (only numpy arrays are allowed)")


def read_checkpoint(path: str | Path) -> dict:
    """Return the raw checkpoint dict (``{"model": state_dict, ...}``), loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl":
        try:
            with open(path, "rb") as f:
                data = _SafeUnpickler(f, encoding="latin1").load()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(
                f"refusing to load {path}: it holds objects beyond tensors and plain data, "
                f"which could run code ({first})") from None
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a Detectron2 checkpoint (top level is "
                              f"{type(data).__name__}, expected a dict)")
    return data


def state_dict_of(checkpoint: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights as tensors, from {"model": ...}, {"blobs": ...} or a bare state dict."""
    weights = checkpoint.get("model", checkpoint.get("blobs", checkpoint))
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: 'model' entry is not a dict of weights")
    out = {}
    for name, value in weights.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            out[name] = value
    if not out:
        raise CheckpointError(f"{path} holds no weights")
    return out


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load a Detectron2 checkpoint strictly into ``model``; returns the checkpoint's extra keys.

    Missing, unexpected or mis-shaped parameters are listed in a CheckpointError: a checkpoint
    for another architecture or class count fails here rather than predicting garbage.
    """
    ckpt = read_checkpoint(path)
    weights = state_dict_of(ckpt, path)
    problems = check_state_dict(model, weights)
    if problems:
        raise CheckpointError(f"{path} does not fit the model built from the config: {problems}")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items() if k in own},
                          strict=False)  # check_state_dict above is the strict check
    return {k: v for k, v in ckpt.items() if k not in ("model", "blobs")}


def check_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> str:
    own = model.state_dict()
    # BatchNorm's step counter is bookkeeping, not a weight: tolerate it missing or extra
    weights = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")
               or k in own}
    missing = sorted(k for k in set(own) - set(weights) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(f"{k} {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(weights) if weights[k].shape != own[k].shape)
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def save_checkpoint(path: str | Path, model: nn.Module, **extra) -> None:
    """Write ``{"model": state_dict, **extra}`` as Detectron2's Checkpointer does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra},
               tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
