"""Nothing in a checkpoint runs code: pickles that would are refused with a one-line message
naming the global (and, as a control, the same bytes do run under plain pickle), and the
allow-listed numpy/codecs globals cannot be used for anything but building arrays."""
from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import subprocess
import sys
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cellseg.core.cli import main
from cellseg.core.engine.checkpoint import read_checkpoint, state_dict_of
from cellseg.core.engine.checkpoint_pickle import load_pickle
from cellseg.core.errors import CheckpointError

_reconstruct = np._core.multiarray._reconstruct
ALLOWED = "only tensors, numpy arrays and plain containers are allowed"


class Reduce:
    """Pickles as ``func(*args)`` (then ``BUILD state`` if given): any call a pickle can make."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args,
                                                                  self.state)


def _payloads(marker):
    """Code-running payloads that each create ``marker``, keyed by the global they name."""
    return {
        "posix.system": Reduce(os.system, (f"touch {marker}",)),  # os.system's real module
        "builtins.exec": Reduce(exec, (f"open({str(marker)!r}, 'w').close()",)),
        "io.open": Reduce(open, (str(marker), "w")),
    }


def _model_zoo_with(evil, protocol):
    """A real-looking model-zoo checkpoint: weights first, the payload last."""
    weights = {"conv1.weight": np.ones((2, 3, 1, 1), np.float32)}
    return pickle.dumps({"model": weights, "__author__": "x", "evil": evil}, protocol=protocol)


def _run_plain_unpickler(path, torch_load=False):
    """The control: load the file the unsafe way, in a child process."""
    code = ("import sys, torch; torch.load(sys.argv[1], weights_only=False)" if torch_load else
            "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))")
    subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("name", ["posix.system", "builtins.exec", "io.open"])
def test_code_running_pickle_is_refused_naming_the_global(name, protocol, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(_model_zoo_with(_payloads(marker)[name], protocol))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    if protocol < 3:  # protocols 0-2 write Python 2's module names (fix_imports)
        name = name.replace("builtins.", "__builtin__.")
    assert str(err.value) == (f"refusing to load {path}: it references {name}, which could run "
                              f"code; {ALLOWED}")
    assert not marker.exists()
    _run_plain_unpickler(path)  # control: the very same bytes do run code
    assert marker.exists(), "the payload is not real"


def test_python2_builtin_eval_is_refused(tmp_path):
    """Python 2 names builtins ``__builtin__``; refused under its own name, before import."""
    marker = tmp_path / "pwned"
    source = f"open({str(marker)!r}, 'w')".encode()
    # {'model': eval(source)} as cPickle protocol 2 writes it
    stream = (b"\x80\x02}q\x00U\x05modelq\x01c__builtin__\neval\nq\x02"
              + b"U" + bytes([len(source)]) + source + b"\x85Rs.")
    path = tmp_path / "R-50.pkl"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError, match=r"it references __builtin__\.eval, which could"):
        read_checkpoint(path)
    assert not marker.exists()
    _run_plain_unpickler(path)
    assert marker.exists()


def test_code_running_pth_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"model": {"w": torch.ones(2)}, "evil": _payloads(marker)["posix.system"]}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(err.value) == (f"refusing to load {path}: it references posix.system, which could "
                              f"run code; {ALLOWED}")
    assert not marker.exists()
    _run_plain_unpickler(path, torch_load=True)
    assert marker.exists()


def test_cli_prints_the_refusal_on_one_line(fixtures_dir, nuclei_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(_model_zoo_with(_payloads(marker)["posix.system"], 5))
    rc = main(["predict", "--config", str(fixtures_dir / "mask_rcnn" / "config.yaml"),
               "--weights", str(path), "--out", str(tmp_path / "r.json"),
               str(nuclei_dir / "img2d.tif")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not marker.exists()
    assert err[0] == (f"cellseg predict: error: refusing to load {path}: it references "
                      "posix.system, which could run code; only tensors, numpy arrays and "
                      "plain containers are allowed")


def test_code_in_a_plainly_pickled_torch_storage_is_refused(tmp_path):
    """``torch.storage._load_from_bytes`` is allowed (tensors pickled with plain pickle) but
    reads its bytes with PyTorch's restricted unpickler: upstream's torch.load would run them."""
    marker = tmp_path / "pwned"
    evil = Reduce(torch.storage._load_from_bytes,
                  (_torch_bytes({"x": _payloads(marker)["posix.system"]}),))
    path = tmp_path / "model.pkl"
    path.write_bytes(_model_zoo_with(evil, 4))
    with pytest.raises(CheckpointError, match="a torch storage in it references posix.system, "
                                              "which could run code"):
        read_checkpoint(path)
    assert not marker.exists()
    _run_plain_unpickler(path)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# the allowed globals cannot be abused


def _storage():
    """What ``pickle`` writes for a tensor's storage (a TypedStorage, deprecated as an API)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.arange(6.0).storage()


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()

ABUSES = {
    # _codecs.encode may only turn a latin-1 str into bytes (what protocol 2 writes)
    "encode-other-codec": (Reduce(codecs.encode, ("abc", "rot13")), "_codecs.encode"),
    "encode-non-str": (Reduce(codecs.encode, (b"6162", "hex")), "_codecs.encode"),
    # object and structured dtypes would hold arbitrary objects
    "object-dtype": (Reduce(np.dtype, ("O", False, True)), "numpy.dtype('O')"),
    "object-array": (np.array([1, "a"], dtype=object), "numpy.dtype('O8')"),
    "structured-dtype": (np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), "numpy.dtype('V8')"),
    "dtype-fields-state": (Reduce(np.dtype, ("f4", False, True),
                                  (3, "<", None, ("a",), {"a": ("f4", 0)}, 4, 4, 0)),
                           "unsupported state"),
    # _reconstruct builds plain ndarrays only
    "reconstruct-other-class": (Reduce(_reconstruct, (collections.OrderedDict, (0,), b"b")),
                                "not a plain numpy.ndarray"),
    "subclass": (np.ma.masked_array([1.0, 2.0]), "numpy.ma.core._mareconstruct"),
    # an array whose state claims more data than the file holds: refused, nothing allocated
    "huge-shape": (Reduce(_reconstruct, (np.ndarray, (0,), b"b"),
                          (1, (10**12, 10**6), np.dtype("f4"), False, b"\0" * 4)),
                   "needs 4000000000000000000 bytes, the pickle holds 4"),
    "negative-shape": (Reduce(_reconstruct, (np.ndarray, (0,), b"b"),
                              (1, (-1,), np.dtype("f4"), False, b"\0" * 4)), "invalid shape"),
    "array-data-not-bytes": (Reduce(_reconstruct, (np.ndarray, (0,), b"b"),
                                    (1, (1,), np.dtype("f4"), False, [1.0])), "not bytes"),
    # finished values cannot be changed by a BUILD opcode
    "scalar-state": (Reduce(np._core.multiarray.scalar, (np.dtype("f4"), b"\0" * 4),
                            (None, {"value": 1})), "sets the state of a float32"),
    "array-state-twice": (Reduce(np._core.numeric._frombuffer,
                                 (b"\0" * 4, np.dtype("f4"), (1,), "C"),
                                 (1, (1,), np.dtype("f4"), False, b"\0" * 4)), "state twice"),
    "ndarray-called": (Reduce(np.ndarray, ((10**6,),)), "numpy.ndarray may only be named"),
    "global-as-value": (np.dtype, "holds numpy.dtype as a value"),
    "other-numpy-function": (Reduce(np.load, ("x.npy",)), "references numpy.load"),
    # plainly pickled torch tensors: a storage (torch.load(weights_only=True) of its bytes) and
    # views of it strictly within its bounds
    "tensor-outside-storage": (Reduce(torch._utils._rebuild_tensor_v2,
                                      (_storage(), 2, (10,), (1,), False,
                                       collections.OrderedDict())), "lies outside its storage"),
    "tensor-with-hooks": (Reduce(torch._utils._rebuild_tensor_v2,
                                 (_storage(), 0, (6,), (1,), False,
                                  collections.OrderedDict(h=1))), "no backward hooks"),
    "storage-not-a-storage": (Reduce(torch.storage._load_from_bytes, (_torch_bytes({"a": 1}),)),
                              "gave a dict, not a storage"),
    "parameter": (torch.nn.Parameter(torch.ones(2)), "references torch._utils._rebuild_parameter"),
}


@pytest.mark.parametrize("case", list(ABUSES))
def test_allowed_globals_cannot_be_abused(case, tmp_path):
    payload, expected = ABUSES[case]
    path = tmp_path / "model.pkl"
    path.write_bytes(_model_zoo_with(payload, 2 if case.startswith("encode") else 4))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith((f"refusing to load {path}: ", f"cannot read checkpoint {path}"))


def test_a_pickle_cannot_rebind_an_allowed_global(tmp_path):
    """BUILD with a slot state would ``setattr`` on the object a global resolves to (on a
    function: ``__defaults__``, ``__kwdefaults__``...); the stand-ins refuse, and stay intact."""
    # GLOBAL _codecs.encode; BUILD (None, {"__defaults__": ("rot13",)}) ; STOP
    stream = (b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__"
              b"X\x05\x00\x00\x00rot13\x85s\x86b.")
    path = tmp_path / "model.pkl"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError, match="tries to modify _codecs.encode"):
        read_checkpoint(path)
    path.write_bytes(_model_zoo_with(ABUSES["encode-other-codec"][0], 2))
    with pytest.raises(CheckpointError, match="_codecs.encode is only allowed"):
        read_checkpoint(path)


def test_persistent_ids_are_refused(tmp_path):
    # what a torch.save'd pickle holds without its zip: storages by persistent id
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00wX\x04\x00\x00\x00blobQs.")
    with pytest.raises(CheckpointError, match="persistent id"):
        read_checkpoint(path)


def test_shared_and_cyclic_references_survive(tmp_path):
    w = np.arange(4, dtype=np.float32)
    loop: list = [w]
    loop.append(loop)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": w, "b": w}, "loop": loop}, protocol=2))
    ckpt = read_checkpoint(path)
    assert ckpt["model"]["a"] is ckpt["model"]["b"] and ckpt["loop"][1] is ckpt["loop"]
    assert ckpt["loop"][0] is ckpt["model"]["a"]


@pytest.mark.parametrize("case", ["truncated", "text", "list-top-level", "deep-nesting",
                                  "no-weights", "empty"])
def test_unreadable_files_get_one_line(case, fixtures_dir, tmp_path):
    path = tmp_path / "model.pkl"
    expected = "cannot read checkpoint"
    if case == "truncated":
        data = (fixtures_dir / "mask_rcnn" / "model_final.pkl").read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif case == "text":
        path.write_text("MODEL:\n  WEIGHTS: x\n")
    elif case == "list-top-level":
        path.write_bytes(pickle.dumps([np.zeros(2)]))
        expected = "is not a Detectron2 checkpoint (top level is list"
    elif case == "deep-nesting":  # 100000 nested lists: EMPTY_LIST * n, APPEND * (n - 1)
        path.write_bytes(b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
        expected = "nested too deeply"
    elif case == "no-weights":
        path.write_bytes(pickle.dumps({"model": {"names": ["a"]}}))
        expected = "holds no weights"
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        state_dict_of(read_checkpoint(path), path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------------------
# property: whatever numpy data this Python pickles, the safe loader reads as pickle itself does

_DTYPES = ["?", "i1", "u1", "<i2", ">i2", "<u4", "<i8", "<f2", "<f4", ">f4", "<f8", "<c8",
           "<c16", "S3", "<U2"]


@st.composite
def _arrays(draw):
    array = draw(hnp.arrays(st.sampled_from(_DTYPES).map(np.dtype),
                            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)))
    view = draw(st.sampled_from(["C", "F", "strided"]))
    if view == "F":
        return np.asfortranarray(array)
    if view == "strided" and array.ndim:
        return array[::2]
    return array


_leaves = st.one_of(_arrays(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=5), st.binary(max_size=5), st.none(), st.booleans(),
                    _arrays().filter(lambda a: a.ndim == 0).map(lambda a: a[()]))  # scalars
_trees = st.recursive(_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.tuples(kids, kids),
    st.dictionaries(st.text(max_size=4), kids, max_size=3).map(collections.OrderedDict),
    st.dictionaries(st.text(max_size=4), kids, max_size=3)), max_leaves=8)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes() and a.flags.f_contiguous == b.flags.f_contiguous)
    if isinstance(a, (dict, list, tuple)):
        return (type(a) is type(b) and len(a) == len(b) and all(
            ka == kb and _same(va, vb) for (ka, va), (kb, vb) in zip(
                a.items() if isinstance(a, dict) else enumerate(a),
                b.items() if isinstance(b, dict) else enumerate(b))))
    if isinstance(a, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


@settings(max_examples=100, deadline=None)
@given(_trees, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_safe_loader_reads_what_plain_pickle_reads(tree, protocol):
    data = pickle.dumps({"x": tree}, protocol=protocol)
    assert _same(pickle.loads(data), load_pickle(io.BytesIO(data)))
