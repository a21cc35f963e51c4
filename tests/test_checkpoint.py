"""Every checkpoint layout a lab may have loads into the fixture Mask R-CNN and predicts exactly
as the fixture's own ``model_final.pth``: Detectron2 model-zoo pickles of every protocol (0-5),
Detectron1/Caffe2 ``blobs`` pickles, Python 2 pickles, torch.save variants and safetensors.

All files are written by the test (Python 2 ones as the byte stream Python 2.7's cPickle writes,
see ``py2_cpickle``) except the fixture's own ``model_final.pkl``/``.pth``.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cellseg.core.engine import load_predictor
from cellseg.core.engine.checkpoint import read_checkpoint, state_dict_of
from cellseg.core.engine.checkpoint_pickle import load_pickle
from cellseg.core.io import read_image

# a small input and fewer proposals keep each prediction short; identical weights must still
# give bit-identical detections
SMALL = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
         "MODEL.RPN.POST_NMS_TOPK_TEST", "200", "TEST.DETECTIONS_PER_IMAGE", "50"]


@pytest.fixture(scope="module")
def mask_rcnn(fixtures_dir):
    return fixtures_dir / "mask_rcnn"


@pytest.fixture(scope="module")
def reference_weights(mask_rcnn) -> dict[str, torch.Tensor]:
    ckpt = torch.load(mask_rcnn / "model_final.pth", map_location="cpu", weights_only=True)
    return ckpt["model"]


@pytest.fixture(scope="module")
def numpy_weights(reference_weights) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in reference_weights.items()}


@pytest.fixture(scope="module")
def crop(nuclei_dir) -> np.ndarray:
    return read_image(nuclei_dir / "img2d.tif")[96:224, 160:288]


def _predict(config, weights, image):
    predictor = load_predictor(config, weights, "cpu", SMALL)
    return predictor, predictor(image)


@pytest.fixture(scope="module")
def reference_prediction(mask_rcnn, crop):
    _, result = _predict(mask_rcnn / "config.yaml", mask_rcnn / "model_final.pth", crop)
    assert len(result) > 5  # a prediction worth comparing
    return result


def assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction):
    predictor, result = _predict(mask_rcnn / "config.yaml", path, crop)
    loaded = predictor.model.state_dict()
    for name, value in reference_weights.items():
        assert torch.equal(loaded[name].contiguous(), value), name
    for field in ("boxes", "scores", "classes"):
        assert np.array_equal(getattr(result, field), getattr(reference_prediction, field)), field
    assert np.array_equal(result.masks.to_dense(), reference_prediction.masks.to_dense())


# ---------------------------------------------------------------------------------------------
# Python 2 pickles, byte for byte


class Py2CPickler:
    """The stream Python 2.7's ``cPickle.dump(obj, f, 2)`` writes (what Detectron1 used, with
    ``pickle.HIGHEST_PROTOCOL`` = 2) for dicts, ``str`` (given here as ``bytes``), ints, floats,
    bools, None, tuples, and numpy 1.x arrays and scalars.

    There is no Python 2 here, so the opcodes follow cPickle.c (``save_dict`` batching,
    ``save_tuple`` TUPLE1-3, ``save_global`` memoised and re-used with BINGET, BINPUT after each
    memoised object) and numpy 1.x's ``array_reduce``/``arraydescr_reduce``/``gentype_reduce``
    (``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` + state
    ``(1, shape, dtype, is_fortran, raw str)``; ``numpy.dtype('f4', 0, 1)`` + state
    ``(3, '<', None, None, None, -1, -1, 0)``; ``numpy.core.multiarray.scalar(dtype, raw str)``).
    A test checks that real numpy reads the stream back as the same arrays.
    """

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo: dict = {}

    def dumps(self, obj) -> bytes:
        self.save(obj)
        return bytes(self.out + b".")  # STOP

    def put(self, key) -> None:
        idx = self.memo.setdefault(key, len(self.memo))
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def get(self, key) -> bool:
        if key not in self.memo:
            return False
        idx = self.memo[key]
        self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
        return True

    def global_(self, module: str, name: str) -> None:
        if not self.get(("global", module, name)):
            self.out += b"c" + f"{module}\n{name}\n".encode()
            self.put(("global", module, name))

    def save(self, obj) -> None:
        out = self.out
        if isinstance(obj, (np.ndarray, np.generic, np.dtype)):  # np.float64 is a float too
            self.save_numpy(obj)
        elif obj is None:
            out += b"N"
        elif obj is True or obj is False:
            out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                out += b"K" + bytes([obj])
            elif 0 <= obj < 65536:
                out += b"M" + struct.pack("<H", obj)
            else:
                out += b"J" + struct.pack("<i", obj)
        elif isinstance(obj, float):
            out += b"G" + struct.pack(">d", obj)
        elif isinstance(obj, bytes):  # a Python 2 str
            out += (b"U" + bytes([len(obj)]) if len(obj) < 256
                    else b"T" + struct.pack("<i", len(obj))) + obj
            self.put(("str", len(self.memo)))
        elif isinstance(obj, tuple):
            if not obj:
                out += b")"
                return
            if len(obj) > 3:
                out += b"("
            for item in obj:
                self.save(item)
            out += b"t" if len(obj) > 3 else b"\x85\x86\x87"[len(obj) - 1:len(obj)]
            self.put(("tuple", len(self.memo)))
        elif isinstance(obj, dict):
            out += b"}"
            self.put(("dict", len(self.memo)))
            items = list(obj.items())
            for start in range(0, len(items), 1000):  # cPickle's BATCHSIZE
                batch = items[start:start + 1000]
                if len(batch) == 1:
                    self.save(batch[0][0])
                    self.save(batch[0][1])
                    out += b"s"
                else:
                    out += b"("
                    for key, value in batch:
                        self.save(key)
                        self.save(value)
                    out += b"u"
        else:
            raise TypeError(type(obj))

    def save_numpy(self, obj) -> None:
        out = self.out
        if isinstance(obj, np.dtype):
            if self.get(("dtype", obj.str)):  # numpy's builtin dtypes are singletons
                return
            self.global_("numpy", "dtype")
            self.save((obj.str[1:].encode(), 0, 1))
            out += b"R"
            self.put(("dtype", obj.str))
            # (3, byte order, None, None, None, elsize, alignment, flags): numpy 1.x wrote the
            # same state as numpy 2 does, with the byte order as a str
            state = obj.__reduce__()[2]
            self.save((state[0], state[1].encode(), *state[2:]))
            out += b"b"
        elif isinstance(obj, np.ndarray):
            self.global_("numpy.core.multiarray", "_reconstruct")
            self.global_("numpy", "ndarray")
            self.save((0,))
            self.save(b"b")
            out += b"\x87R"
            self.put(("array", id(obj)))
            fortran = bool(obj.flags.f_contiguous and not obj.flags.c_contiguous)
            data = obj.tobytes(order="F" if fortran else "C")
            self.save((1, obj.shape, obj.dtype, fortran, data))
            out += b"b"
        elif isinstance(obj, np.generic):
            self.global_("numpy.core.multiarray", "scalar")
            self.save(obj.dtype)
            self.save(obj.tobytes())
            out += b"\x86R"
            self.put(("scalar", len(self.memo)))


def py2_cpickle(obj) -> bytes:
    return Py2CPickler().dumps(obj)


def _py2_keys(d: dict) -> dict:
    return {k.encode(): v for k, v in d.items()}


def test_py2_stream_is_what_numpy_itself_reads(numpy_weights):
    """The hand-written stream is a real numpy pickle: plain pickle + numpy read it back."""
    sample = {b"conv_w": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
              b"fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
              b"flags": np.array([True, False]), b"ids": np.arange(300, dtype=np.int64),
              b"empty": np.zeros((0, 4), np.float32), b"lr": np.float32(0.02),
              b"big": numpy_weights["backbone.fpn_output2.weight"], b"n": 70000, b"t": (1, 2.5)}
    stream = py2_cpickle({b"blobs": sample, b"cfg": b"MODEL:\n  TYPE: generalized_rcnn\n"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's numpy.core shim
        by_numpy = pickle.loads(stream, encoding="latin1")
    ours = load_pickle(io.BytesIO(stream))
    assert by_numpy["cfg"] == ours["cfg"] == "MODEL:\n  TYPE: generalized_rcnn\n"
    for key, value in sample.items():
        for got in (by_numpy["blobs"][key.decode()], ours["blobs"][key.decode()]):
            assert type(got) is type(value) and np.array_equal(got, value), key
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and got.flags.f_contiguous == \
                    value.flags.f_contiguous
    # the shared float32 dtype is referenced by memo (BINGET), as cPickle writes it
    assert stream.count(b"cnumpy\ndtype\n") == 1


# ---------------------------------------------------------------------------------------------
# the layouts


def _write_pickle(path, obj, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_model_zoo_pickle_of_every_protocol(protocol, tmp_path, mask_rcnn, crop, numpy_weights,
                                            reference_weights, reference_prediction):
    """Detectron2's model-zoo layout, written by this Python with each pickle protocol."""
    ckpt = {"model": collections.OrderedDict(numpy_weights), "__author__": "Detectron2 Model Zoo",
            "matching_heuristics": True}
    path = _write_pickle(tmp_path / "model_final.pkl", ckpt, protocol)
    extra = read_checkpoint(path)
    assert extra["__author__"] == "Detectron2 Model Zoo" and extra["matching_heuristics"] is True
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_caffe2_blobs_pickle(protocol, tmp_path, mask_rcnn, crop, numpy_weights,
                             reference_weights, reference_prediction):
    """Detectron1's layout: ``{"blobs": ..., "cfg": ...}`` with SGD ``*_momentum`` blobs, which
    Detectron2 drops (they are not weights), and numpy scalars."""
    blobs = dict(numpy_weights)
    blobs.update({f"{k}_momentum": np.zeros_like(v) for k, v in list(numpy_weights.items())[:5]})
    blobs["lr"] = np.float32(0.02)  # a numpy scalar: not an array, not a weight
    path = _write_pickle(tmp_path / "model_final.pkl", {"blobs": blobs, "cfg": "..."}, protocol)
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


@pytest.mark.parametrize("layout", ["blobs", "bare"])
def test_python2_cpickle(layout, tmp_path, mask_rcnn, crop, numpy_weights, reference_weights,
                         reference_prediction):
    """A Python 2 pickle (protocol 2, latin-1 ``str`` data, numpy 1.x globals): Detectron1's
    detection models (``blobs``) and ImageNet backbones (a bare dict of blobs)."""
    blobs = _py2_keys(numpy_weights)
    blobs[b"conv1_w_momentum"] = np.zeros(3, np.float32)
    obj = ({b"blobs": blobs, b"cfg": b"..."} if layout == "blobs" else blobs)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(py2_cpickle(obj))
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


def test_fixture_model_zoo_pkl(mask_rcnn, crop, reference_weights, reference_prediction):
    """The fixture's own model_final.pkl, written by upstream tooling (numpy 2, protocol 4)."""
    assert_predicts_like_the_pth(mask_rcnn / "model_final.pkl", mask_rcnn, crop,
                                 reference_weights, reference_prediction)


@pytest.mark.parametrize("layout", ["bare", "model-zoo-keys", "ddp-prefix", "numpy-in-pth",
                                    "legacy-format", "named-pkl"])
def test_torch_save_layouts(layout, tmp_path, mask_rcnn, crop, reference_weights,
                            reference_prediction):
    weights = collections.OrderedDict(reference_weights)
    path, kwargs = tmp_path / "model.pth", {}
    if layout == "bare":
        ckpt = weights
    elif layout == "model-zoo-keys":
        ckpt = {"model": weights, "__author__": "lab", "matching_heuristics": True,
                "iteration": 899}
    elif layout == "ddp-prefix":  # saved from inside DistributedDataParallel
        ckpt = {"model": {f"module.{k}": v for k, v in weights.items()}, "iteration": 3}
    elif layout == "numpy-in-pth":  # a model-zoo dict passed to torch.save as it was
        ckpt = {"model": {k: v.numpy() for k, v in weights.items()}, "__author__": "lab"}
    elif layout == "legacy-format":  # torch < 1.6 (not a zip)
        ckpt, kwargs = {"model": weights}, {"_use_new_zipfile_serialization": False}
    else:  # torch.save'd, then named .pkl: the format is read from the bytes, not the name
        ckpt, path = {"model": weights}, tmp_path / "model.pkl"
    torch.save(ckpt, path, **kwargs)
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_torch_tensors_written_by_plain_pickle(protocol, tmp_path, mask_rcnn, crop,
                                               reference_weights, reference_prediction):
    """``pickle.dump(model.state_dict(), f)``: tensors, not numpy arrays, in a .pkl."""
    path = _write_pickle(tmp_path / "model.pkl", collections.OrderedDict(reference_weights),
                         protocol)
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


def test_safetensors(tmp_path, mask_rcnn, crop, reference_weights, reference_prediction):
    from safetensors.torch import save_file

    path = tmp_path / "model_final.safetensors"
    save_file({k: v.contiguous() for k, v in reference_weights.items()}, str(path),
              metadata={"__author__": "converted by the lab"})
    assert read_checkpoint(path)["__author__"] == "converted by the lab"
    assert_predicts_like_the_pth(path, mask_rcnn, crop, reference_weights, reference_prediction)


def test_foreign_byte_order_and_dtypes_become_native_tensors(tmp_path):
    """A pickle from a big-endian machine (protocol 5 keeps the byte order) and float64/half
    weights give native tensors of the same values."""
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    ckpt = {"model": {"m.a": values.astype(">f8"), "m.b": values.astype(np.float16),
                      "m.c": np.array([1, 2], ">i4")}}
    for protocol in (2, 5):
        path = _write_pickle(tmp_path / f"p{protocol}.pkl", ckpt, protocol)
        weights = state_dict_of(read_checkpoint(path))
        assert torch.equal(weights["m.a"], torch.from_numpy(values))
        assert weights["m.b"].dtype == torch.float16 and torch.equal(weights["m.c"],
                                                                     torch.tensor([1, 2]))


def test_caffe2_blob_names_are_read_and_converted(tmp_path, mask_rcnn):
    """An ImageNet backbone as Detectron1 shipped it (R-50.pkl: Python 2, bare dict of Caffe2
    blob names) unpickles, and its names are mapped onto Detectron2's as upstream's matching
    heuristics map them (tests/test_c2_names.py checks the full-size backbones)."""
    from cellseg.core.config import load_config
    from cellseg.core.engine.meta_arch import build_model
    from cellseg.trainer.checkpointing import load_pretrained

    blobs = {b"conv1_w": np.ones((64, 3, 7, 7), np.float32), b"res_conv1_bn_s": np.ones(64, "f4"),
             b"res_conv1_bn_b": np.zeros(64, "f4"), b"res2_0_branch2a_w": np.ones((64, 64, 1, 1),
                                                                                  "f4"),
             b"fc1000_w": np.ones((1000, 2048), "f4"), b"conv1_w_momentum": np.ones(1, "f4")}
    path = tmp_path / "R-50.pkl"
    path.write_bytes(py2_cpickle(blobs))
    raw = read_checkpoint(path)
    assert np.array_equal(raw["res2_0_branch2a_w"], blobs[b"res2_0_branch2a_w"])
    model = build_model(load_config(mask_rcnn / "config.yaml"))
    report = load_pretrained(model, path)
    assert report.renamed == {"backbone.bottom_up.stem.conv1.weight": "conv1_w",
                              "backbone.bottom_up.stem.conv1.norm.weight": "res_conv1_bn_s",
                              "backbone.bottom_up.stem.conv1.norm.bias": "res_conv1_bn_b"}
    # the small fixture's res2 is narrower than R-50's: the blob is named, not forced in
    assert report.unexpected == ["fc1000_w"] and report.reinitialised == [
        "backbone.bottom_up.res2.0.conv1.weight"]
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight, torch.ones(64, 3, 7, 7))


@pytest.mark.parametrize("fmt", ["py2-pkl", "pkl", "pth", "ddp-pth", "safetensors"])
@pytest.mark.parametrize("name", ["cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv",
                                  "pointrend_rcnn_X_101_32x8d_FPN_3x_coco"])
def test_research_checkpoint_names_come_through_unchanged(name, fmt, fixtures_dir, tmp_path):
    """The research runs' checkpoints carry exactly the full-size models' Detectron2 names: no
    format renames them (only DDP's ``module.`` prefix goes), so the strict load matches them
    one to one. One-element tensors stand in for the weights: names are what is checked."""
    import json

    names = list(json.loads((fixtures_dir / f"{name}.params.json").read_text()))
    weights = {k: np.full(1, i, np.float32) for i, k in enumerate(names)}
    path = tmp_path / f"model.{'safetensors' if fmt == 'safetensors' else fmt[-3:]}"
    if fmt == "py2-pkl":
        path.write_bytes(py2_cpickle({b"model": _py2_keys(weights), b"__author__": b"lab",
                                      b"matching_heuristics": True}))
    elif fmt == "pkl":
        _write_pickle(path, {"model": weights, "__author__": "lab"}, 4)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(weights, str(path))
    else:
        prefix = "module." if fmt == "ddp-pth" else ""
        torch.save({"model": {prefix + k: torch.from_numpy(v) for k, v in weights.items()},
                    "iteration": 1}, path)
    loaded = state_dict_of(read_checkpoint(path), path)
    assert list(loaded) == names or (fmt == "safetensors" and sorted(loaded) == sorted(names))
    assert all(int(loaded[k]) == i for i, k in enumerate(names))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(["?", "i1", "u1", "<i2", ">i4", "<u8", "<f2", "<f4", ">f4",
                                   "<f8", "<c8", "S2"]).map(np.dtype),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3)),
       st.booleans())
def test_python2_arrays_read_as_numpy_reads_them(array, fortran):
    """Any array in a Python 2 stream: the safe loader gives what numpy's own unpickling gives
    (foreign byte order swapped to native, Fortran order kept)."""
    array = np.asfortranarray(array) if fortran else array
    scalar = array.flat[0] if array.size and array.dtype.kind != "S" else np.float32(1)
    stream = py2_cpickle({b"a": array, b"s": scalar})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = pickle.loads(stream, encoding="latin1")
    got = load_pickle(io.BytesIO(stream))
    for key in ("a", "s"):
        assert type(got[key]) is type(expected[key]) and got[key].dtype == expected[key].dtype
        assert np.asarray(got[key]).tobytes() == np.asarray(expected[key]).tobytes()
    assert got["a"].flags.f_contiguous == expected["a"].flags.f_contiguous
    assert np.array_equal(got["a"], array, equal_nan=array.dtype.kind in "fc")
