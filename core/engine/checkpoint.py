"""Loading Detectron2 checkpoints without executing code, and saving compatible ones.

The format is told by the file's first bytes, not its name (labs rename files):

* PyTorch (``torch.save``, zip or legacy): ``torch.load(weights_only=True)`` -- PyTorch's
  restricted unpickler admits tensors and plain containers only; a file it refuses gets a
  second reading with our allow-list as torch's ``pickle_module`` (numpy arrays inside).
* ``.safetensors``: a JSON header and raw tensor bytes; nothing to execute by design.
* any other pickle (Detectron2 model-zoo ``.pkl``, Detectron1/Caffe2 ``.pkl`` written by
  Python 2, protocol 0-5): :mod:`.checkpoint_pickle`, which admits numpy arrays/scalars and
  plain containers only; any other global (``os.system``, ``builtins.eval``, ...) is refused
  before it is imported.

Layouts: ``{"model": weights, ...}`` (Detectron2, with ``__author__``/``matching_heuristics``/
``iteration``...), ``{"blobs": weights}`` (Detectron1) or the bare weights dict (a
``state_dict``, an ImageNet ``.pkl``); weights are tensors or numpy arrays.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from ..errors import CheckpointError
from .c2_names import Alignment, align_to_model, looks_like_caffe2
from .checkpoint_pickle import Refused, load_pickle, materialise, torch_pickle_module
from .layers import FrozenBatchNorm2d

# torch.save's legacy (pre-1.6, non-zip) format starts with this number, pickled (protocol 2)
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _format_of(path: Path) -> str:
    """'torch', 'safetensors' or 'pickle', from the file's first bytes (and suffix)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (
            len(head) >= 9 and head[8:9] == b"{"
            and int.from_bytes(head[:8], "little") < path.stat().st_size):
        return "safetensors"  # 8-byte header length, then the JSON header
    # the local-file magic at the start: zipfile.is_zipfile looks for a directory near the end,
    # which a pickle holding torch.save'd bytes (a plainly pickled tensor) also has
    if head.startswith((b"PK\x03\x04", _TORCH_LEGACY_MAGIC)):
        return "torch"
    return "pickle"


def _read_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    # beyond PyTorch's allow-list, e.g. numpy arrays (a model-zoo dict saved with torch.save):
    # torch's loader still reads the zip, but every global goes through our allow-list, which
    # refuses anything else by name (Refused, turned into one line by read_checkpoint)
    return materialise(torch.load(path, map_location="cpu", weights_only=False,
                                  pickle_module=torch_pickle_module, encoding="latin1"))


def _read_safetensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        weights = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata() or {}
    # string metadata (e.g. __author__) rides along like a .pth's extra keys
    return {**{k: v for k, v in metadata.items() if k not in ("model", "blobs")},
            "model": weights}


def _read_pickle(path: Path):
    with open(path, "rb") as f:
        return load_pickle(f)


_READERS = {"torch": _read_torch, "safetensors": _read_safetensors, "pickle": _read_pickle}


def read_checkpoint(path: str | Path) -> dict:
    """Return the raw checkpoint dict (``{"model": weights, ...}`` as written), loaded safely.

    Args:
        path: a ``.pth``/``.pt`` (torch.save), ``.pkl`` (pickle of numpy arrays, any protocol,
            Python 2 or 3) or ``.safetensors`` file.

    Returns:
        The top-level dict; weights are tensors or numpy arrays (see :func:`state_dict_of`).

    Raises:
        CheckpointError: missing, unreadable, not a dict, or it would run code (one line,
            naming the offending global; nothing of the file was executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = _READERS[_format_of(path)](path)
    except Refused as exc:
        raise CheckpointError(f"refusing to load {path}: {exc}") from None
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"cannot read checkpoint {path}: nested too deeply") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch, pickle or "
                              f"safetensors file ({first})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a Detectron2 checkpoint (top level is "
                              f"{type(data).__name__}, expected a dict)")
    return data


def state_dict_of(checkpoint: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights as tensors, from {"model": ...}, {"blobs": ...} or a bare state dict.

    As Detectron2's ``Checkpointer`` does: numpy arrays become tensors, Caffe2's
    ``*_momentum`` blobs (SGD state, not weights) are dropped, and a ``module.`` prefix on
    every name (a model saved inside DistributedDataParallel) is stripped.

    Args:
        checkpoint: what :func:`read_checkpoint` returned.
        path: for messages.

    Returns:
        ``{name: tensor}`` in native byte order; non-numeric entries are left out. Caffe2 blob
        names (``conv1_w``) come as they are: :func:`align_checkpoint` maps them to the model.
    """
    weights = checkpoint.get("model", checkpoint.get("blobs", checkpoint))
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: 'model' entry is not a dict of weights")
    out = {}
    for name, value in weights.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            # torch takes native byte order only (a big-endian machine's pickle is not)
            value = torch.from_numpy(np.ascontiguousarray(value, value.dtype.newbyteorder("=")))
        if isinstance(value, torch.Tensor) and isinstance(name, str) \
                and not name.endswith("_momentum"):
            out[name] = value
    if not out:
        raise CheckpointError(f"{path} holds no weights")
    if all(name.startswith("module.") for name in out):
        out = {name[len("module."):]: value for name, value in out.items()}
    return out


def align_checkpoint(model_state: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                     path: str | Path = "checkpoint", c2_conversion: bool = True) -> Alignment:
    """Map a checkpoint's names onto the model's keys as Detectron2's matching heuristics do.

    Used for Caffe2/Detectron1 blob names (ImageNet backbones, Detectron1 models) and for
    checkpoints that ask for it (``matching_heuristics``); see :mod:`.c2_names`.

    Raises:
        CheckpointError: names that Detectron2 would refuse as ambiguous.
    """
    try:
        return align_to_model(model_state, weights, c2_conversion=c2_conversion)
    except ValueError as exc:
        raise CheckpointError(f"cannot match {path} to the model: {exc}") from None


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load a Detectron2 checkpoint strictly into ``model``; returns the checkpoint's extra keys.

    Missing, unexpected or mis-shaped parameters are listed in a CheckpointError: a checkpoint
    for another architecture or class count fails here rather than predicting garbage. Caffe2
    blob names are converted first (as Detectron2 does), then held to the same strict check.
    """
    ckpt = read_checkpoint(path)
    weights = state_dict_of(ckpt, path)
    note = ""
    if looks_like_caffe2(weights):
        aligned = align_checkpoint(model.state_dict(), weights, path)
        # the strict check below then names what is missing (an ImageNet backbone has no heads)
        weights = {**{c2: weights[c2] for c2 in aligned.unmatched},
                   **{key: weights[c2] for key, c2 in aligned.wrong_shape.items()},
                   **_identity_statistics(model), **aligned.weights}
        note = " (Caffe2 blob names, converted as Detectron2 does)"
    problems = check_state_dict(model, weights)
    if problems:
        raise CheckpointError(f"{path}{note} does not fit the model built from the config: "
                              f"{problems}")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items() if k in own},
                          strict=False)  # check_state_dict above is the strict check
    return {k: v for k, v in ckpt.items() if k not in ("model", "blobs")}


def _identity_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    # Caffe2 folds BN statistics into scale and bias: FrozenBN's running mean/var are the
    # identity for its blobs (what FrozenBatchNorm2d's load hook fills in, as upstream's does)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            out[f"{name}.running_mean"] = torch.zeros_like(module.running_mean)
            out[f"{name}.running_var"] = torch.ones_like(module.running_var)
    return out


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
