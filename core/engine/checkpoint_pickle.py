"""Reading model-zoo pickles (numpy arrays in plain containers) without ever running their code.

A pickle is a program: every global it names is imported and may be called with arguments the
file chooses. :class:`SafeUnpickler` resolves only the globals of
:mod:`.checkpoint_globals` (numpy arrays, dtypes and scalars, protocol-2 bytes, OrderedDict,
plainly pickled torch tensors), each to a stand-in that checks its arguments and builds stubs;
any other global is refused before it is imported. :func:`materialise` then turns the stubs
into numpy arrays/scalars and tensors and copies the containers, dropping anything a ``BUILD``
opcode may have attached.
"""
from __future__ import annotations

import collections
import pickle
import types
from typing import IO, Any

import torch

from .checkpoint_globals import (
    ALLOWED_HINT, GLOBALS, ArrayStub, DTypeStub, Refused, ScalarStub, TensorStub, torch_refusal)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are :mod:`.checkpoint_globals`' stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        found = GLOBALS.get((module, name))
        if found is None:
            raise Refused(f"it references {module}.{name}, which could run code; "
                          f"{ALLOWED_HINT}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("it references external objects (a persistent id), as torch.save's "
                      "format does: not a plain pickle")


_ATOMS = (type(None), bool, int, float, complex, str, bytes)


def materialise(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace the stubs in an unpickled object by numpy arrays/scalars, copying containers.

    Args:
        obj: what :class:`SafeUnpickler` returned.
        memo: objects already converted, by id (shared references and cycles stay so).

    Returns:
        The same structure made of dict, OrderedDict, list, tuple, set, numpy arrays (C- or
        Fortran-ordered, as written) and scalars, and Python atoms.
    """
    if type(obj) in _ATOMS:
        return obj
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    kind = type(obj)
    if kind is ArrayStub:
        if obj.array is None:
            raise Refused("a numpy array in the pickle was never given its data")
        out = memo[id(obj)] = obj.array
    elif kind is ScalarStub:
        out = memo[id(obj)] = obj.value
    elif kind is TensorStub and isinstance(obj.value, torch.Tensor):
        out = memo[id(obj)] = obj.value
    elif kind is DTypeStub:
        out = memo[id(obj)] = obj.resolve()
    elif kind in (dict, collections.OrderedDict):
        out = memo[id(obj)] = kind()
        for key, value in obj.items():
            out[materialise(key, memo)] = materialise(value, memo)
    elif kind is list:
        out = memo[id(obj)] = []
        out.extend(materialise(x, memo) for x in obj)
    elif kind is bytearray:
        out = memo[id(obj)] = bytes(obj)
    elif kind in (tuple, set, frozenset):
        out = memo[id(obj)] = kind(materialise(x, memo) for x in obj)
    else:  # a stand-in referenced as a value (e.g. numpy.dtype itself)
        name = getattr(obj, "name", None) or kind.__name__.strip("_")
        raise Refused(f"it holds {name} as a value; {ALLOWED_HINT}")
    return out


class _TorchUnpickler(pickle.Unpickler):
    """The allow-list for ``torch.load(pickle_module=...)``: torch's loader sets its own
    ``persistent_load`` (storages from the zip's data files), which SafeUnpickler's would
    shadow."""

    find_class = SafeUnpickler.find_class


def _torch_load(file: IO[bytes], **kwargs: Any) -> Any:
    return _TorchUnpickler(file, **kwargs).load()


# what torch.load calls for its pickle_module: the module's Unpickler and load
torch_pickle_module = types.ModuleType("cellseg_safe_pickle")
torch_pickle_module.Unpickler = _TorchUnpickler  # type: ignore[attr-defined]
torch_pickle_module.load = _torch_load  # type: ignore[attr-defined]


def load_pickle(file: IO[bytes]) -> Any:
    """Read a pickle of numpy arrays and containers, any protocol (0-5), Python 2 or 3.

    Args:
        file: a binary file object positioned at the pickle.

    Returns:
        The unpickled object, with numpy arrays and scalars in plain containers.

    Raises:
        Refused: the pickle references anything beyond the allow-list (nothing was run).
        Exception: whatever ``pickle`` raises for a corrupt file.
    """
    # latin1: Python 2 `str` holds raw bytes (array data); Detectron2 reads them the same way
    raw = SafeUnpickler(file, encoding="latin1").load()
    return materialise(raw)


__all__ = ["Refused", "SafeUnpickler", "load_pickle", "materialise", "torch_pickle_module",
           "torch_refusal"]
