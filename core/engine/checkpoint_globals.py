"""The globals a checkpoint pickle may name, as stand-ins that check their arguments.

A pickle is a program: every global it names is imported and may be called with arguments the
file chooses. Detectron2's ``.pkl`` files (and Detectron1/Caffe2's, written by Python 2) only
need numpy arrays, numpy scalars and containers, i.e. this handful of globals:

==============================================  ==============================================
global (as written in the pickle)               written by
==============================================  ==============================================
``numpy.core.multiarray._reconstruct``           ndarray, numpy 1.x (Python 2 and 3), protocol 0-4
``numpy._core.multiarray._reconstruct``          ndarray, numpy 2.x, protocol 0-4
``numpy.core.numeric._frombuffer`` (and _core)   contiguous ndarray, protocol 5
``numpy.core.multiarray.scalar`` (and _core)     numpy scalars (``np.float32(1)``)
``numpy.dtype``, ``numpy.ndarray``               dtype and array class of the above
``_codecs.encode``, ``__builtin__.bytes``        ``bytes`` under protocol 0-2 (Python 3)
``collections.OrderedDict``                      torch/Detectron2 state dicts
``torch._utils._rebuild_tensor_v2``,             torch tensors written by plain ``pickle``
``torch.storage._load_from_bytes``               (``pickle.dump(model.state_dict(), f)``)
==============================================  ==============================================

None of them is handed to the pickle itself. ``checkpoint_pickle.SafeUnpickler`` resolves
each to an immutable stand-in (:class:`Global`) that checks its arguments and records what to
build (stubs for arrays, dtypes and scalars); numpy's own ``__setstate__``/``_reconstruct``
never see the file's data. After the pickle is read, ``checkpoint_pickle.materialise`` turns
the stubs into arrays (``np.frombuffer`` on a validated dtype; tensors:
``torch.load(weights_only=True)`` of the storage's bytes, viewed only within its bounds) and
copies the containers, dropping any attribute a ``BUILD`` opcode may have attached.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
from typing import Any, Callable

import numpy as np
import torch

from ..errors import CheckpointError


class Refused(CheckpointError):
    """The pickle asks for something beyond numpy arrays and plain containers."""


# numeric and fixed-width string dtypes only: an object dtype would hold arbitrary Python
# objects, a structured one arbitrary fields; neither is a weight
_DTYPE_SPEC = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16)|[SU][0-9]{1,6})")
_MAX_NDIM = 32  # numpy's own limit is 64; weights have at most 5
ALLOWED_HINT = "only tensors, numpy arrays and plain containers are allowed"


def _text_bytes(data: Any, what: str) -> bytes:
    """Raw bytes of an array/scalar. Python 2 wrote them as ``str``: with ``encoding="latin1"``
    they arrive as a ``str`` whose code points are the bytes."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        try:  # Python 2 `str` read with encoding="latin1": every code point is below 256
            return data.encode("latin-1")
        except UnicodeEncodeError:
            raise Refused(f"{what} data is text, not bytes") from None
    raise Refused(f"{what} data is a {type(data).__name__}, not bytes; {ALLOWED_HINT}")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if (not isinstance(value, tuple) or len(value) > _MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in value)):
        raise Refused(f"{what} has an invalid shape {value!r}")
    return value


class DTypeStub:
    """``numpy.dtype(spec, align, copy)`` followed by ``BUILD`` with its byte order."""

    __slots__ = ("spec", "byteorder", "_built")
    __hash__ = None  # type: ignore[assignment]  # never a dict key or set member

    def __init__(self, spec: str):
        self.spec, self.byteorder, self._built = spec, "=", False

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags
        # [, metadata]); anything with a subarray or fields is a structured dtype: refused
        if (self._built or not isinstance(state, tuple) or len(state) < 2
                or state[1] not in ("<", ">", "|", "=")
                or any(x is not None for x in state[2:5])):
            raise Refused(f"numpy dtype {self.spec!r} has an unsupported state {state!r}")
        dtype = np.dtype(self.spec)
        if len(state) > 5 and state[5] not in (-1, dtype.itemsize):
            raise Refused(f"numpy dtype {self.spec!r} claims item size {state[5]!r}")
        self.byteorder, self._built = state[1], True

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> DTypeStub:
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec) or align:
        raise Refused(f"numpy.dtype({spec!r}) is not a numeric dtype (an object or structured "
                      f"dtype could hold arbitrary objects); {ALLOWED_HINT}")
    return DTypeStub(spec)


def _as_dtype(value: Any, what: str) -> np.dtype:
    if type(value) is not DTypeStub:
        raise Refused(f"{what} was given a {type(value).__name__} instead of a numpy dtype")
    return value.resolve()


def _array_from_bytes(data: bytes, dtype: np.dtype, shape: tuple[int, ...],
                      fortran: bool) -> np.ndarray:
    """The one place arrays are made: a copy (writable, owns its memory) of the raw bytes."""
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if len(data) != expected:
        raise Refused(f"numpy array of shape {shape} and dtype {dtype} needs {expected} bytes, "
                      f"the pickle holds {len(data)}")
    flat = np.frombuffer(data, dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


class ArrayStub:
    """``_reconstruct(ndarray, (0,), b"b")`` followed by ``BUILD`` with the array's state, or a
    finished array from ``_frombuffer``."""

    __slots__ = ("array",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, array: np.ndarray | None = None):
        self.array = array

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise Refused("the pickle sets a numpy array's state twice")
        if isinstance(state, tuple) and len(state) == 4:  # numpy < 1.0 had no version field
            state = (0, *state)
        if not isinstance(state, tuple) or len(state) != 5:
            raise Refused("a numpy array's state is not (version, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, data = state
        if type(fortran) not in (bool, int):
            raise Refused(f"a numpy array's fortran flag is {fortran!r}")
        array = _array_from_bytes(_text_bytes(data, "numpy array"),
                                  _as_dtype(dtype, "numpy array"),
                                  _shape(shape, "numpy array"), bool(fortran))
        # numpy's own __setstate__ swaps foreign byte order to native; do as it does
        self.array = array if array.dtype.isnative else array.astype(
            array.dtype.newbyteorder("="))


class ValueStub:
    """A finished value (numpy scalar, torch storage or tensor) that no BUILD may change."""

    __slots__ = ("value",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, value: Any):
        self.value = value

    def __setstate__(self, state: Any) -> None:
        raise Refused(f"the pickle sets the state of a {type(self.value).__name__}")


class ScalarStub(ValueStub):
    """``numpy.core.multiarray.scalar(dtype, raw bytes)``: a numpy scalar such as np.float32."""

    __slots__ = ()


class _NdarrayClass:
    """Stand-in for ``numpy.ndarray``: only ever an argument of ``_reconstruct``."""

    __slots__ = ()
    name = "numpy.ndarray"

    def __call__(self, *args: Any) -> None:
        raise Refused(f"numpy.ndarray may only be named as _reconstruct's class; "
                      f"{ALLOWED_HINT}")


_NDARRAY = _NdarrayClass()


def _reconstruct(cls: Any, shape: Any = (0,), dtype: Any = b"b") -> ArrayStub:
    if cls is not _NDARRAY:
        raise Refused(f"numpy _reconstruct asked for a {type(cls).__name__}, not a plain "
                      f"numpy.ndarray; {ALLOWED_HINT}")
    _shape(shape, "numpy _reconstruct")  # the placeholder shape: the state sets the real one
    return ArrayStub()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> ArrayStub:
    if order not in ("C", "F"):
        raise Refused(f"numpy _frombuffer was given order {order!r}")
    return ArrayStub(_array_from_bytes(_text_bytes(buf, "numpy array"),
                                        _as_dtype(dtype, "numpy _frombuffer"),
                                        _shape(shape, "numpy _frombuffer"), order == "F"))


def _scalar(dtype: Any, data: Any = None) -> ScalarStub:
    np_dtype = _as_dtype(dtype, "numpy scalar")
    raw = _text_bytes(data, "numpy scalar")
    if len(raw) != np_dtype.itemsize:
        raise Refused(f"numpy scalar of dtype {np_dtype} needs {np_dtype.itemsize} bytes, "
                      f"the pickle holds {len(raw)}")
    if np_dtype.itemsize == 0:  # np.bytes_(b"") / np.str_(""): frombuffer takes no size 0
        return ScalarStub(np_dtype.type())
    return ScalarStub(np.frombuffer(raw, dtype=np_dtype)[0])


def _encode(text: Any, encoding: Any = None) -> bytes:
    # Python 3 writes bytes under protocol 0-2 as _codecs.encode(str(b, "latin1"), "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode is only allowed as protocol 2 writes bytes, i.e. "
                      f"(str, 'latin1'), not ({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _bytes(*args: Any) -> bytes:
    if args:  # protocol 0-2 write b"" as bytes(); any argument is something else
        raise Refused("builtins.bytes is only allowed without arguments (an empty bytes)")
    return b""


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    # Python 2 wrote OrderedDict([[k, v], ...]); Python 3 writes OrderedDict() + SETITEMS
    if len(args) > 1 or (args and not isinstance(args[0], list)):
        raise Refused("collections.OrderedDict is only allowed with a list of items")
    return collections.OrderedDict(*args)


_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def torch_refusal(exc: pickle.UnpicklingError) -> str:
    """What ``torch.load(weights_only=True)`` refused, as "references X, which could run code"."""
    found = _TORCH_GLOBAL.search(str(exc))
    return (f"references {found.group(1)}, which could run code" if found else
            "holds objects beyond tensors and plain data, which could run code")


class TensorStub(ValueStub):
    """A torch storage (from ``_load_from_bytes``) or tensor (``_rebuild_tensor_v2``)."""

    __slots__ = ()


def _load_from_bytes(data: Any) -> TensorStub:
    # upstream calls torch.load(weights_only=False) on these bytes; PyTorch's restricted
    # unpickler is enough for a storage, and it must be one
    try:
        storage = torch.load(io.BytesIO(_text_bytes(data, "torch storage")),
                             map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise Refused(f"a torch storage in it {torch_refusal(exc)}") from None
    if type(storage) is not torch.TypedStorage:
        raise Refused(f"torch.storage._load_from_bytes gave a {type(storage).__name__}, "
                      "not a storage")
    return TensorStub(storage)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> TensorStub:
    # a storage from _load_from_bytes, or from torch.load's own persistent_load (a .pth)
    storage = storage.value if type(storage) is TensorStub else storage
    if (type(storage) is not torch.TypedStorage or type(offset) is not int or offset < 0
            or type(requires_grad) is not bool or hooks not in ({}, collections.OrderedDict())
            or metadata not in (None, {})):
        raise Refused("torch._utils._rebuild_tensor_v2 is only allowed on a storage, with no "
                      f"backward hooks or metadata; {ALLOWED_HINT}")
    size, stride = _shape(size, "torch tensor"), _shape(stride, "torch tensor")
    # set_ would grow a too-small storage (reading uninitialised memory): check the extent.
    # (the untyped storage, as torch's own _rebuild_tensor: TypedStorage's API is deprecated)
    untyped = storage._untyped_storage
    numel = untyped.nbytes() // storage.dtype.itemsize
    extent = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
    if len(size) != len(stride) or (0 not in size and extent > numel):
        raise Refused(f"a torch tensor of size {size}, stride {stride} at offset {offset} lies "
                      f"outside its storage of {numel} elements")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return TensorStub(tensor.set_(untyped, offset, size, stride))


class Global:
    """What the unpickler hands out for an allowed global: callable, and immutable, so a BUILD
    opcode cannot rebind what it calls (functions would let it set ``__defaults__``)."""

    __slots__ = ("_fn", "name")

    def __init__(self, fn: Callable[..., Any], name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "name", name)

    def __setattr__(self, key: str, value: Any) -> None:
        raise Refused(f"the pickle tries to modify {self.name}")

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _bytes,  # the name protocol 0-2 write (fix_imports)
    ("builtins", "bytes"): _bytes,
    ("collections", "OrderedDict"): _ordered_dict,
}
for _numpy_core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x module paths
    _ALLOWED[(f"{_numpy_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_numpy_core}.multiarray", "scalar")] = _scalar
    _ALLOWED[(f"{_numpy_core}.numeric", "_frombuffer")] = _frombuffer
_ALLOWED[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor_v2
_ALLOWED[("torch.storage", "_load_from_bytes")] = _load_from_bytes
GLOBALS = {key: Global(fn, ".".join(key)) for key, fn in _ALLOWED.items()}
GLOBALS[("numpy", "ndarray")] = _NDARRAY  # type: ignore[assignment]


__all__ = ["ALLOWED_HINT", "GLOBALS", "ArrayStub", "DTypeStub", "Global", "Refused", "ScalarStub",
           "TensorStub", "ValueStub", "torch_refusal"]
