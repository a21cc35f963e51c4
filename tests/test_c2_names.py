"""Caffe2/Detectron1 blob names (ImageNet backbones: R-50.pkl, X-101-32x8d.pkl,
X-152-32x8d-IN5k.pkl) as a training start.

The name mapping is checked against upstream Detectron2's own output on the full-size backbones
(tests/fixtures/c2_names/reference.json, written by make_reference.py in the oracle venv); the
loading is checked with real pickles: the fixture models' trained backbones written under their
Caffe2 names (Python 2 ``{"blobs": ...}`` streams and Python 3 protocol 2/4 bare dicts).
"""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cellseg.core.config import load_config
from cellseg.core.engine.c2_names import (align_to_model, convert_basic_c2_names,
                                          convert_c2_detectron_names, looks_like_caffe2)
from cellseg.core.engine.checkpoint import load_weights
from cellseg.core.engine.meta_arch import build_model
from cellseg.core.errors import CheckpointError
from cellseg.trainer.checkpointing import load_pretrained

from tests.conftest import FIXTURES
from tests.test_checkpoint import py2_cpickle

HERE = Path(__file__).parent / "fixtures" / "c2_names"
REFERENCE = json.loads((HERE / "reference.json").read_text())
_spec = importlib.util.spec_from_file_location("c2_inverse", HERE / "inverse.py")
inverse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inverse)
BACKBONES = ["X-152-32x8d-IN5k", "X-101-32x8d", "R-50", "R-50-GN"]


# ------------------------------------------------------------------ mapping == upstream's
@pytest.mark.parametrize("case", BACKBONES)
def test_full_size_backbone_maps_as_upstream_maps_it(case):
    """Every blob of the full-size ImageNet backbone goes to the same key as in Detectron2
    (the X-152 one is the research recipe's MODEL.WEIGHTS: 465 tensors of the model's 973)."""
    ref = REFERENCE[case]
    blobs = {name: torch.empty(shape, device="meta") for name, shape in ref["blobs"].items()}
    model = {name: torch.empty(shape, device="meta") for name, shape in ref["model"].items()}
    converted, sources = convert_c2_detectron_names(blobs)
    assert {c2: new for new, c2 in sources.items()} == ref["converted"]
    aligned = align_to_model(model, blobs)
    ours = {c2: key for key, c2 in aligned.sources.items()}
    ours.update({c2: next(n for n, s in sources.items() if s == c2) for c2 in aligned.unmatched})
    assert ours == ref["aligned"]
    assert not aligned.wrong_shape and aligned.unmatched == ["fc1000_b", "fc1000_w"]
    if case == "X-152-32x8d-IN5k":
        assert (len(aligned.weights), len(model)) == (465, 973)
    # the blob lists come from inverse.py: it must be the exact inverse of the mapping
    assert all(inverse.c2_name(key, ref["norm"]) == c2 for key, c2 in aligned.sources.items())


@pytest.mark.parametrize("case", ["heads", "heads-C4"])
def test_detectron1_head_names_convert_as_upstream_converts_them(case):
    """RPN (FPN and C4), FPN, box, mask, keypoint and DensePose blob names, and the class
    layout changes: background rows dropped from bbox_pred/mask predictor, moved last in
    cls_score."""
    ref = REFERENCE[case]
    blobs = {b: torch.arange(40, dtype=torch.float32).reshape(8, 5) + i
             for i, b in enumerate(ref["order"])}
    converted, sources = convert_c2_detectron_names(blobs)
    assert {c2: new for new, c2 in sources.items()} == ref["converted"]
    for new, values in ref["values"].items():
        assert converted[new].tolist() == values, new


def test_basic_names_and_caffe2_detection():
    assert convert_basic_c2_names(["conv1_w", "res_conv1_bn_s", "res4_22_branch1_gn_b",
                                   "res5_2_branch2c_bn_riv", "pred_w"]) == [
        "stem.conv1.weight", "stem.conv1.norm.weight", "res4.22.shortcut.norm.bias",
        "res5.2.conv3.norm.running_var", "linear.weight"]
    assert looks_like_caffe2(["conv1_w", "fc1000_b"])
    assert not looks_like_caffe2(["conv1_w", "backbone.fpn_lateral2.weight"])


def test_suffix_match_needs_a_whole_name_and_takes_the_longest():
    model = {"a.res2.0.conv1.weight": torch.empty(2), "a.conv1.weight": torch.empty(2),
             "head.xconv1.weight": torch.empty(2), "b.conv1.weight": torch.empty(3)}
    got = align_to_model(model, {"res2.0.conv1.weight": torch.ones(2),
                                 "conv1.weight": torch.zeros(2)}, c2_conversion=False)
    assert got.sources == {"a.res2.0.conv1.weight": "res2.0.conv1.weight",
                           "a.conv1.weight": "conv1.weight"}
    assert got.wrong_shape == {"b.conv1.weight": "conv1.weight"} and not got.unmatched
    with pytest.raises(ValueError, match="matches two model parameters"):
        align_to_model({"a.conv1.weight": torch.empty(2), "b.conv1.weight": torch.empty(2)},
                       {"conv1.weight": torch.ones(2)}, c2_conversion=False)


# ------------------------------------------------------------------ loading real pickles
def _imagenet_blobs(fixture: str, norm: str = "bn") -> dict[str, np.ndarray]:
    """The fixture model's trained backbone as an ImageNet pickle holds it (Caffe2 names, conv
    weights and norm scale/bias only, the 1000-class classifier too)."""
    weights = torch.load(FIXTURES / fixture / "model_final.pth", map_location="cpu",
                         weights_only=True)["model"]
    blobs = {c2: weights[key].numpy() for c2, key in
             inverse.imagenet_blobs(weights, norm).items()}
    width = weights["backbone.bottom_up.res5.2.conv3.weight"].shape[0]
    rng = np.random.default_rng(0)
    blobs["fc1000_w"] = rng.standard_normal((1000, width), np.float32)
    blobs["fc1000_b"] = rng.standard_normal(1000, np.float32)
    return blobs


def _write(path: Path, blobs: dict[str, np.ndarray], fmt: str) -> Path:
    if fmt == "py2-blobs":  # Detectron1's layout, SGD momenta included, written by Python 2
        stream = {b"blobs": {**{k.encode(): v for k, v in blobs.items()},
                             **{f"{k}_momentum".encode(): np.zeros_like(v)
                                for k, v in list(blobs.items())[:10]}}, b"cfg": b"..."}
        path.write_bytes(py2_cpickle(stream))
    else:  # an ImageNet .pkl: the bare dict, Python 3 protocol 2 or 4
        with open(path, "wb") as f:
            pickle.dump(blobs, f, protocol=int(fmt[-1]))
    return path


def _fresh(fixture: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = load_config(FIXTURES / fixture / "config.yaml").clone()
    for name, value in overrides.items():
        node = cfg
        *parents, leaf = name.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return build_model(cfg)


@pytest.mark.parametrize("fixture,fmt", [("mask_rcnn", "py2-blobs"), ("mask_rcnn", "pickle-2"),
                                         ("cascade_gn_dconv", "pickle-4")])
def test_imagenet_backbone_loads_bit_identically(fixture, fmt, tmp_path):
    """Every blob lands in its parameter unchanged (FrozenBN scale/bias included), FrozenBN
    statistics become the identity (Caffe2 folded them), the rest keeps its initialisation:
    FPN, RPN, ROI heads, and the deformable convs' offsets (no ImageNet model has them)."""
    blobs = _imagenet_blobs(fixture)
    path = _write(tmp_path / "R-50.pkl", blobs, fmt)
    model = _fresh(fixture)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path)
    after = model.state_dict()
    targets = inverse.imagenet_blobs(after)
    assert sorted(targets) == sorted(set(blobs) - {"fc1000_w", "fc1000_b"})
    for c2, key in targets.items():
        assert after[key].dtype == torch.float32 and torch.equal(
            after[key], torch.from_numpy(blobs[c2])), key
    assert report.loaded == sorted(targets.values()) and len(report.renamed) == len(targets)
    assert report.unexpected == ["fc1000_b", "fc1000_w"] and not report.reinitialised
    stats = [k for k in after if k.endswith(("norm.running_mean", "norm.running_var"))]
    assert sorted(report.identity_stats) == sorted(stats)
    for key in stats:
        assert torch.equal(after[key], torch.zeros_like(after[key]) if key.endswith("mean")
                           else torch.ones_like(after[key])), key
    rest = set(after) - set(targets.values()) - set(stats)
    assert rest and set(report.missing) == rest
    assert any("backbone.fpn_" in k for k in rest) and any("roi_heads" in k for k in rest)
    assert (fixture != "cascade_gn_dconv") ^ any("conv2_offset" in k for k in rest)
    for key in rest:
        assert torch.equal(after[key], before[key]), key
    text = "\n".join(report.lines())
    assert f"loaded {len(targets)} tensors" in text and "(conv1_w -> backbone.bottom_up.stem.conv1.weight, " in text
    assert "ignored (not in this model): fc1000_b, fc1000_w" in text


def test_group_norm_backbone_loads(tmp_path):
    """A GN ImageNet backbone (R-50-GN.pkl: ``_gn_s``/``_gn_b``) fills GroupNorm's affine."""
    source = _fresh("cascade_gn_dconv", seed=1, **{"MODEL.RESNETS.NORM": "GN"}).state_dict()
    blobs = {c2: source[key].numpy() for c2, key in inverse.imagenet_blobs(source, "gn").items()}
    assert "res2_0_branch2a_gn_s" in blobs
    model = _fresh("cascade_gn_dconv", seed=2, **{"MODEL.RESNETS.NORM": "GN"})
    report = load_pretrained(model, _write(tmp_path / "R-50-GN.pkl", blobs, "pickle-4"))
    after = model.state_dict()
    assert len(report.loaded) == len(blobs) and not report.unexpected
    for c2, key in inverse.imagenet_blobs(after, "gn").items():
        assert torch.equal(after[key], torch.from_numpy(blobs[c2])), key


def test_torchvision_style_names_with_matching_heuristics(tmp_path):
    """A converted backbone in Detectron2's model-zoo layout asking for matching heuristics
    (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``: no ``backbone.bottom_up.`` prefix)
    loads by suffix, as Detectron2's checkpointer loads it."""
    weights = torch.load(FIXTURES / "mask_rcnn" / "model_final.pth", map_location="cpu",
                         weights_only=True)["model"]
    prefix = "backbone.bottom_up."
    short = {k[len(prefix):]: v.numpy() for k, v in weights.items() if k.startswith(prefix)}
    path = tmp_path / "R-50-tv.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": short, "__author__": "torchvision", "matching_heuristics": True}, f)
    model = _fresh("mask_rcnn")
    report = load_pretrained(model, path)
    assert len(report.loaded) == len(short) and not report.unexpected
    after = model.state_dict()
    for name, value in short.items():
        assert torch.equal(after[prefix + name], torch.from_numpy(value)), name


def test_cli_train_starts_from_an_imagenet_pickle(tmp_path, capsys, nuclei_dir):
    """``cellseg train --weights R-50.pkl``: the run starts from the backbone (with LR 0 the
    saved backbone is the pickle's, bit for bit) and the log says what was matched."""
    from tests.test_trainer_run import FAST, write_tiles
    import tifffile

    from cellseg.app.cli import main as cli_main

    image = tifffile.imread(nuclei_dir / "img2d.tif")
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    train = write_tiles(tmp_path / "tiles", "train", [(0, 0), (128, 128)], image, labels)
    blobs = _imagenet_blobs("mask_rcnn")
    path = _write(tmp_path / "R-50.pkl", blobs, "py2-blobs")
    out = tmp_path / "run"
    rc = cli_main(["train", "--config", str(FIXTURES / "mask_rcnn" / "config.yaml"), "--train",
                   str(train), "--output", str(out), "--device", "cpu", *FAST, "--weights",
                   str(path), "--set", "SOLVER.MAX_ITER", "1", "--set", "SOLVER.BASE_LR", "0.0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"initialising from {path}: loaded {len(blobs) - 2} tensors" in captured.out
    assert "matched" in captured.out and "Detectron2's heuristics" in captured.out
    saved = torch.load(out / "model_final.pth", weights_only=True)["model"]
    for c2, key in inverse.imagenet_blobs(saved).items():
        assert torch.equal(saved[key], torch.from_numpy(blobs[c2])), key


# ------------------------------------------------------------------ refusals
def test_caffe2_pickle_that_fits_nothing_is_refused(tmp_path):
    blobs = {"conv1_w": np.ones((7, 3, 3, 3), np.float32), "fc1000_w": np.ones((1000, 9), "f4"),
             "pool5_w": np.ones(3, "f4")}
    path = _write(tmp_path / "other.pkl", blobs, "pickle-4")
    with pytest.raises(CheckpointError, match=r"fits only 0 of its 3 tensors .* another "
                                              r"architecture"):
        load_pretrained(_fresh("mask_rcnn"), path)


def test_colliding_caffe2_names_are_one_line(tmp_path):
    """FPN and C4 RPN blobs in one file map to the same Detectron2 name: upstream asserts;
    here it is a one-line CheckpointError."""
    blobs = _imagenet_blobs("mask_rcnn")
    blobs.update({"conv_rpn_w": np.ones(3, "f4"), "conv_rpn_fpn2_w": np.ones(3, "f4")})
    path = _write(tmp_path / "both.pkl", blobs, "pickle-2")
    with pytest.raises(CheckpointError, match="conv_rpn_fpn2_w and conv_rpn_w both map to "
                                              "proposal_generator.rpn_head.conv.weight"):
        load_pretrained(_fresh("mask_rcnn"), path)


def test_predicting_from_a_backbone_only_pickle_names_what_is_missing(tmp_path):
    """The strict loader (prediction) converts the names too, then refuses the headless model."""
    path = _write(tmp_path / "R-50.pkl", _imagenet_blobs("mask_rcnn"), "pickle-4")
    with pytest.raises(CheckpointError) as info:
        load_weights(_fresh("mask_rcnn"), path)
    msg = str(info.value)
    assert "(Caffe2 blob names, converted as Detectron2 does) does not fit" in msg
    assert "missing: backbone.fpn_" in msg and "unexpected: fc1000_b, fc1000_w" in msg
    assert "\n" not in msg


def test_model_zoo_pickle_with_matching_heuristics_loads_as_its_pth_does():
    """Detectron2's model-zoo .pkl says ``matching_heuristics``: its full names match exactly,
    so fine-tuning from it (another class count) gives the same report and weights as the .pth."""
    reports, states = [], []
    for name in ("model_final.pkl", "model_final.pth"):
        model = _fresh("mask_rcnn", **{"MODEL.ROI_HEADS.NUM_CLASSES": 3})
        reports.append(load_pretrained(model, FIXTURES / "mask_rcnn" / name))
        states.append(model.state_dict())
    pkl, pth = reports
    for field in ("loaded", "reinitialised", "missing", "unexpected", "identity_stats"):
        assert sorted(getattr(pkl, field)) == sorted(getattr(pth, field)), field
    assert not pkl.renamed and "roi_heads.box_predictor.cls_score.weight" in pkl.reinitialised
    assert all(torch.equal(states[0][k], states[1][k]) for k in pkl.loaded)
