"""Detectron2 config reading: real fixture dumps, real files in tmp_path, no Detectron2."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import yaml

from cellseg.core.config import CfgNode, get_default_config, load_config
from cellseg.core.errors import CellsegError, ConfigError

FIXTURE_CONFIGS = [
    "cascade_gn_dconv/config.yaml",
    "pointrend/config.yaml",
    "mask_rcnn/config.yaml",
    "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.config.yaml",
    "pointrend_rcnn_X_101_32x8d_FPN_3x_coco.config.yaml",
]
# in cascade_gn_dconv/config.yaml only; defined by no Detectron2 version (see core/config/compat)
NON_UPSTREAM = {"MODEL.ROI_HEADS.CASCADE_IOUS", "MODEL.ROI_HEADS.CASCADE_BBOX_REG_WEIGHTS"}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- defaults -------------------------------------------------------------------------------------

def test_default_tree_is_detectron2s_plus_pointrend():
    cfg = get_default_config()
    leaves = flat(cfg.to_dict())
    # 192 keys of detectron2/config/defaults.py (Aug 2024) + 23 of add_pointrend_config
    assert len(leaves) == 215
    assert leaves["VERSION"] == 2
    assert leaves["MODEL.META_ARCHITECTURE"] == "GeneralizedRCNN"
    assert leaves["MODEL.ROI_HEADS.NAME"] == "Res5ROIHeads"
    assert leaves["MODEL.RPN.PRE_NMS_TOPK_TEST"] == 6000
    assert leaves["MODEL.ROI_BOX_CASCADE_HEAD.IOUS"] == [0.5, 0.6, 0.7]
    assert leaves["MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS"][2] == [30.0, 30.0, 15.0, 15.0]
    assert leaves["INPUT.MIN_SIZE_TRAIN"] == [800]
    assert leaves["SOLVER.WEIGHT_DECAY_BIAS"] is None
    assert leaves["SOLVER.AMP.ENABLED"] is False
    assert leaves["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"] == "value"
    assert leaves["TEST.AUG.MIN_SIZES"][-1] == 1200
    assert leaves["TEST.PRECISE_BN.NUM_ITER"] == 200
    assert leaves["FLOAT32_PRECISION"] == "" and leaves["GLOBAL.HACK"] == 1.0
    assert leaves["MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"] == 4096
    # PointRend project keys, with their (post-Feb-2020) defaults
    assert leaves["MODEL.POINT_HEAD.TRAIN_NUM_POINTS"] == 196
    assert leaves["MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS"] == 784
    assert leaves["MODEL.ROI_MASK_HEAD.FC_DIM"] == 1024
    assert leaves["MODEL.ROI_MASK_HEAD.NUM_FC"] == 2
    assert leaves["MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER"] == 1e-5
    assert leaves["INPUT.CROP.SINGLE_CATEGORY_MAX_AREA"] == 1.0
    # types are upstream's: floats stay floats, ints stay ints
    assert type(leaves["MODEL.ANCHOR_GENERATOR.OFFSET"]) is float
    assert type(leaves["MODEL.RPN.BOUNDARY_THRESH"]) is int
    assert isinstance(cfg.MODEL.RESNETS, CfgNode) and not cfg.is_frozen()


def test_default_config_is_a_fresh_copy_each_time():
    a = get_default_config()
    a.MODEL.PIXEL_MEAN[0] = 0.0
    a.MODEL.ROI_HEADS.NUM_CLASSES = 3
    b = get_default_config()
    assert b.MODEL.PIXEL_MEAN[0] == 103.53 and b.MODEL.ROI_HEADS.NUM_CLASSES == 80


# -- the fixture dumps ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_CONFIGS)
def test_fixture_config_loads_with_every_value_of_the_file(fixtures_dir, name):
    path = fixtures_dir / name
    cfg = load_config(path)
    assert cfg.is_frozen() and cfg.MODEL.ROI_HEADS.is_frozen()
    raw = flat(yaml.safe_load(path.read_text()))
    loaded = flat(cfg.to_dict())
    for key, value in raw.items():
        if key in NON_UPSTREAM:
            assert key not in loaded
            continue
        assert loaded[key] == value, key
    # keys the file leaves out keep their defaults (the PointRend keys, in non-PointRend dumps)
    defaults = flat(get_default_config().to_dict())
    for key in loaded.keys() - raw.keys():
        assert loaded[key] == defaults[key], key


def test_cascade_fixture_values(fixtures_dir):
    cfg = load_config(fixtures_dir / "cascade_gn_dconv" / "config.yaml")
    assert cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4
    assert cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS == [0.5, 0.6, 0.7]
    assert cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS == [
        [10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]]
    # the file's anchors (&id001) resolve to plain, independent lists
    assert cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS == [10.0, 10.0, 5.0, 5.0]
    cascade_weights = cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS
    assert cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS is not cascade_weights[0]
    assert cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG is True
    assert cfg.MODEL.ROI_BOX_HEAD.NORM == "GN" and cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 8
    assert cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE == [False, True, True, True]
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300
    assert cfg.TEST.AUG.MIN_SIZES == [400, 500, 600, 700, 800, 900]
    assert cfg.TEST.AUG.MAX_SIZE == 1600 and cfg.TEST.AUG.FLIP is True
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.INPUT.MAX_SIZE_TEST == 1333
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.5
    assert "CASCADE_IOUS" not in cfg.MODEL.ROI_HEADS
    full = load_config(fixtures_dir / "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.config.yaml")
    assert full.MODEL.RESNETS.DEPTH == 152 and full.MODEL.RESNETS.NUM_GROUPS == 32
    assert full.TEST.DETECTIONS_PER_IMAGE == 100


def test_pointrend_fixture_values(fixtures_dir):
    cfg = load_config(fixtures_dir / "pointrend" / "config.yaml")
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendMaskHead"
    assert cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON is True
    assert cfg.MODEL.ROI_MASK_HEAD.FC_DIM == 256 and cfg.MODEL.ROI_MASK_HEAD.NUM_FC == 2
    assert cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION == 7
    assert cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES == ["p2"]
    assert cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE == ""
    ph = cfg.MODEL.POINT_HEAD
    assert (ph.NAME, ph.NUM_CLASSES, ph.FC_DIM, ph.NUM_FC) == ("StandardPointHead", 4, 64, 3)
    assert (ph.SUBDIVISION_STEPS, ph.SUBDIVISION_NUM_POINTS) == (5, 784)
    assert ph.IN_FEATURES == ["p2"] and ph.COARSE_PRED_EACH_LAYER is True
    assert ph.CLS_AGNOSTIC_MASK is False
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300
    mask_rcnn = load_config(fixtures_dir / "mask_rcnn" / "config.yaml")
    assert mask_rcnn.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert mask_rcnn.MODEL.RESNETS.STRIDE_IN_1X1 is True
    assert mask_rcnn.MODEL.ROI_MASK_HEAD.NAME == "MaskRCNNConvUpsampleHead"


def test_non_upstream_cascade_duplicates_must_agree(fixtures_dir, tmp_path):
    text = (fixtures_dir / "cascade_gn_dconv" / "config.yaml").read_text()
    assert "CASCADE_IOUS:\n    - 0.5\n    - 0.6\n    - 0.7" in text
    ious = "CASCADE_IOUS:\n    - 0.5\n    - 0.6\n    - 0.7"
    bad = write(tmp_path / "c.yaml", text.replace(ious, ious.replace("0.7", "0.8")))
    with pytest.raises(ConfigError, match=r"CASCADE_IOUS.*not a Detectron2 config key") as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "ROI_BOX_CASCADE_HEAD.IOUS" in str(err.value)
    # on the command line they are simply unknown
    with pytest.raises(ConfigError, match="unknown config key 'MODEL.ROI_HEADS.CASCADE_IOUS'"):
        get_default_config().merge_from_list(["MODEL.ROI_HEADS.CASCADE_IOUS", "[0.5]"])


# -- dump -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_CONFIGS)
def test_dump_load_round_trip(fixtures_dir, tmp_path, name):
    cfg = load_config(fixtures_dir / name)
    text = cfg.dump()
    assert "!!" not in text and "&id" not in text and "*id" not in text  # plain safe YAML
    again = load_config(write(tmp_path / "dumped.yaml", text))
    assert again == cfg and again.dump() == text


@pytest.mark.parametrize("name", ["mask_rcnn/config.yaml", "pointrend/config.yaml",
                                  "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.config.yaml"])
def test_dump_has_exactly_the_keys_and_values_of_upstreams_dump(fixtures_dir, name):
    # Upstream wrote these files with cfg.dump(): our dump of the loaded config must carry the
    # same data, so upstream's merge_from_file (with or without add_pointrend_config) reads it.
    path = fixtures_dir / name
    assert yaml.safe_load(load_config(path).dump()) == yaml.safe_load(path.read_text())


def test_dump_is_sorted_and_writes_tuples_as_lists():
    cfg = CfgNode({"B": (1, 2), "A": {"D": ((1, 2), (3,)), "C": "x"}})
    text = cfg.dump()
    assert text == "A:\n  C: x\n  D:\n  - - 1\n    - 2\n  - - 3\nB:\n- 1\n- 2\n"
    defaults = get_default_config()
    plain = yaml.safe_load(defaults.dump())  # PointRend keys at their defaults are left out
    assert "POINT_HEAD" not in plain["MODEL"] and "IMPLICIT_POINTREND" not in plain["MODEL"]
    assert "POINT_HEAD_ON" not in plain["MODEL"]["ROI_MASK_HEAD"]
    defaults.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    dumped = yaml.safe_load(defaults.dump())
    assert dumped["MODEL"]["POINT_HEAD"]["NUM_FC"] == 3
    assert dumped["MODEL"]["ROI_MASK_HEAD"]["POINT_HEAD_ON"] is True


def test_dump_of_defaults_round_trips(tmp_path):
    cfg = get_default_config()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 7
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.INPUT.MIN_SIZE_TRAIN = (640, 672)
    loaded = load_config(write(tmp_path / "d.yaml", cfg.dump()))
    assert loaded == cfg.to_dict()
    assert loaded.INPUT.MIN_SIZE_TRAIN == [640, 672] and loaded.SOLVER.WEIGHT_DECAY_BIAS == 0.0


# -- CfgNode behaviour ----------------------------------------------------------------------------

def test_freeze_blocks_every_kind_of_change_and_clone_is_independent(fixtures_dir):
    cfg = load_config(fixtures_dir / "mask_rcnn" / "config.yaml")
    with pytest.raises(AttributeError, match="frozen"):
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    with pytest.raises(AttributeError, match="frozen"):
        cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] = 2
    with pytest.raises(AttributeError, match="frozen"):
        cfg.NEW_KEY = 1
    with pytest.raises(AttributeError, match="frozen"):
        del cfg.MODEL.FPN
    with pytest.raises(AttributeError, match="frozen"):
        cfg.SOLVER.update({"BASE_LR": 1.0})
    with pytest.raises(AttributeError, match="frozen"):
        cfg.TEST.pop("AUG")
    with pytest.raises(AttributeError, match="frozen"):
        cfg.merge_from_list(["SEED", "3"])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1

    mine = cfg.clone()
    assert not mine.is_frozen() and not mine.MODEL.is_frozen() and mine == cfg
    mine.MODEL.ROI_HEADS.NUM_CLASSES = 2
    mine.MODEL.PIXEL_MEAN.append(0.0)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 and len(cfg.MODEL.PIXEL_MEAN) == 3
    assert mine.freeze() is mine and mine.SOLVER.AMP.is_frozen()


def test_attribute_and_item_access():
    cfg = get_default_config()
    assert cfg.MODEL.RESNETS.DEPTH == cfg["MODEL"]["RESNETS"]["DEPTH"] == 50
    cfg.MODEL.RESNETS.DEPTH = 101
    assert cfg["MODEL"]["RESNETS"]["DEPTH"] == 101
    cfg["MODEL"]["EXTRA"] = {"A": {"B": 1}}  # plain dicts become nodes
    assert cfg.MODEL.EXTRA.A.B == 1 and isinstance(cfg.MODEL.EXTRA.A, CfgNode)
    with pytest.raises(AttributeError, match="did you mean 'DEPTH'"):
        cfg.MODEL.RESNETS.DEPHT
    assert not hasattr(cfg, "NOPE") and getattr(cfg.MODEL, "NOPE", 5) == 5


def test_pickle_and_deepcopy_keep_data_and_frozen_flag(fixtures_dir):
    cfg = load_config(fixtures_dir / "pointrend" / "config.yaml")
    for other in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert other == cfg and isinstance(other.MODEL.POINT_HEAD, CfgNode)
    assert pickle.loads(pickle.dumps(cfg)).MODEL.POINT_HEAD.is_frozen()
    assert not copy.deepcopy(cfg).is_frozen()  # deepcopy is clone(): a modifiable copy


# -- _BASE_ chains --------------------------------------------------------------------------------

def test_base_chain_relative_to_each_including_file(tmp_path, monkeypatch):
    write(tmp_path / "configs" / "Base-RCNN.yaml", """
MODEL:
  META_ARCHITECTURE: GeneralizedRCNN
  RESNETS: {DEPTH: 101}
  ROI_HEADS: {NUM_CLASSES: 3, SCORE_THRESH_TEST: 0.3}
TEST: {DETECTIONS_PER_IMAGE: 50}
""")
    write(tmp_path / "configs" / "nuclei" / "mid.yaml", """
_BASE_: ../Base-RCNN.yaml
MODEL:
  ROI_HEADS: {SCORE_THRESH_TEST: 0.4}
""")
    child = write(tmp_path / "configs" / "nuclei" / "deep" / "child.yaml", """
_BASE_: "../mid.yaml"
MODEL:
  RESNETS: {DEPTH: 50}
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the files, not to the working directory
    cfg = load_config(child)
    assert cfg.MODEL.RESNETS.DEPTH == 50  # child overrides the base of its base
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.4  # mid overrides base
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3  # from the base only
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.5  # default
    assert "_BASE_" not in cfg

    absolute = write(tmp_path / "abs.yaml",
                     f"_BASE_: {tmp_path / 'configs' / 'Base-RCNN.yaml'}\nSEED: 7\n")
    cfg = load_config(absolute, ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    assert (cfg.SEED, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (7, 101, 5)


def test_base_chain_errors_name_the_right_file(tmp_path):
    missing = write(tmp_path / "a.yaml", "_BASE_: nowhere/base.yaml\nSEED: 1\n")
    with pytest.raises(ConfigError, match="_BASE_ file not found") as err:
        load_config(missing)
    assert str(missing) in str(err.value) and "nowhere/base.yaml" in str(err.value)

    base = write(tmp_path / "b" / "base.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASES: 3\n")
    child = write(tmp_path / "b" / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match="unknown config key 'MODEL.ROI_HEADS.NUM_CLASES'") as err:
        load_config(child)
    assert str(err.value).startswith(str(base))

    write(tmp_path / "c" / "x.yaml", "_BASE_: y.yaml\n")
    write(tmp_path / "c" / "y.yaml", "_BASE_: x.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "c" / "x.yaml")

    with pytest.raises(ConfigError, match="_BASE_ must be a file path"):
        load_config(write(tmp_path / "d.yaml", "_BASE_: [a.yaml]\n"))


# -- safe YAML ------------------------------------------------------------------------------------

def test_python_tuple_anchors_and_merge_keys_load_as_plain_data(tmp_path):
    # yaml.dump (not safe_dump) of upstream-style tuple defaults writes !!python/tuple
    data = {"INPUT": {"MIN_SIZE_TRAIN": (640, 672, 704)},
            "MODEL": {"ROI_BOX_CASCADE_HEAD": {"IOUS": (0.5, 0.55, 0.6)}}}
    text = yaml.dump(data)
    assert "!!python/tuple" in text
    text += """
SOLVER:
  STEPS: &steps [100, 200]
  CLIP_GRADIENTS: &clip {ENABLED: true, CLIP_VALUE: 0.5}
TEST:
  AUG:
    MIN_SIZES: *steps
DATASETS: {TRAIN: !!python/tuple [a, b]}
DATALOADER:
  <<: {NUM_WORKERS: 2, REPEAT_SQRT: false}
  NUM_WORKERS: 1
"""
    cfg = load_config(write(tmp_path / "t.yaml", text))
    assert cfg.INPUT.MIN_SIZE_TRAIN == [640, 672, 704] and type(cfg.INPUT.MIN_SIZE_TRAIN) is list
    assert cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS == [0.5, 0.55, 0.6]
    assert cfg.SOLVER.STEPS == [100, 200] and cfg.TEST.AUG.MIN_SIZES == [100, 200]
    assert cfg.SOLVER.STEPS is not cfg.TEST.AUG.MIN_SIZES
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED is True and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.5
    assert cfg.DATASETS.TRAIN == ["a", "b"]
    assert cfg.DATALOADER.NUM_WORKERS == 1 and cfg.DATALOADER.REPEAT_SQRT is False


def test_malicious_python_tags_are_refused_and_never_run(tmp_path):
    target = tmp_path / "pwned_by_open"
    payload = f'MODEL:\n  WEIGHTS: !!python/object/apply:builtins.open ["{target}", "w"]\n'
    # control: an unsafe loader really would create the file, so the check below can fail
    control = tmp_path / "control"
    yaml.unsafe_load(payload.replace(str(target), str(control)))
    assert control.exists()

    evil = write(tmp_path / "evil.yaml", payload)
    with pytest.raises(ConfigError, match=r"refused python tag '!!python/object/apply") as err:
        load_config(evil)
    assert str(evil) in str(err.value) and "line 2" in str(err.value)
    assert not target.exists()

    shell_target = tmp_path / "pwned_by_shell"
    evil = write(tmp_path / "evil2.yaml",
                 f'SEED: !!python/object/apply:os.system ["touch {shell_target}"]\n')
    with pytest.raises(ConfigError, match="refused python tag"):
        load_config(evil)
    assert not shell_target.exists()

    for tag in ("!!python/name:os.system", "!!python/object/new:builtins.dict {}",
                "!!python/module:os"):
        with pytest.raises(ConfigError, match="refused python tag"):
            load_config(write(tmp_path / "evil3.yaml", f"OUTPUT_DIR: {tag}\n"))
    with pytest.raises(ConfigError, match="refused python tag"):
        get_default_config().merge_from_list(
            ["MODEL.WEIGHTS", f'!!python/object/apply:builtins.open ["{target}", "w"]'])
    assert not target.exists()


def test_alias_bomb_is_refused_quickly(tmp_path):
    # "billion laughs": 9 levels of 10 aliases, 10**9 strings once expanded
    rows = ["- &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = write(tmp_path / "bomb.yaml",
                 "SOLVER:\n  WEIGHT_DECAY_BIAS:\n    " + "\n    ".join(rows))
    # expanded, it would take minutes and gigabytes: the per-test timeout (pyproject) fails it
    with pytest.raises(ConfigError, match="'SOLVER.WEIGHT_DECAY_BIAS' is too large") as err:
        load_config(path)
    assert str(path) in str(err.value)


# -- bad input ------------------------------------------------------------------------------------

def test_unknown_keys_name_the_full_key_and_suggest(tmp_path):
    path = write(tmp_path / "u.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASS: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'MODEL.ROI_HEADS.NUM_CLASS'" in msg
    assert "did you mean 'MODEL.ROI_HEADS.NUM_CLASSES'" in msg
    with pytest.raises(ConfigError, match="unknown config key 'MODEL.NUM_CLASSES'.*"
                                          "MODEL.ROI_HEADS.NUM_CLASSES"):
        load_config(write(tmp_path / "u2.yaml", "MODEL:\n  NUM_CLASSES: 4\n"))
    with pytest.raises(ConfigError, match="unknown config key 'SOLVERS'.*'SOLVER'"):
        load_config(write(tmp_path / "u3.yaml", "SOLVERS:\n  BASE_LR: 0.1\n"))
    assert issubclass(ConfigError, CellsegError)


def test_wrong_types_name_key_expected_and_given(tmp_path):
    cases = {
        "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: four\n":
            r"'MODEL.ROI_HEADS.NUM_CLASSES' expects int, got str",
        "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: true\n":
            r"'MODEL.ROI_HEADS.NUM_CLASSES' expects int, got bool",
        "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 4.0\n": r"expects int, got float",
        "MODEL:\n  MASK_ON: 1\n": r"'MODEL.MASK_ON' expects bool, got int",
        "MODEL:\n  PIXEL_MEAN: 100.0\n": r"'MODEL.PIXEL_MEAN' expects list, got float",
        "MODEL:\n  WEIGHTS: {a: 1}\n": r"'MODEL.WEIGHTS' expects str, got mapping",
        "MODEL:\n  RESNETS: 50\n": r"'MODEL.RESNETS' is a section \(a mapping of keys\), got int",
        "INPUT:\n  MIN_SIZE_TRAIN: 800\n": r"'INPUT.MIN_SIZE_TRAIN' expects list, got int",
        "MODEL:\n  DEVICE: null\n": r"'MODEL.DEVICE' expects str, got null",
        "VERSION: 3\n": r"'VERSION' must be an integer from 1 to 2",
    }
    for i, (text, pattern) in enumerate(cases.items()):
        path = write(tmp_path / f"t{i}.yaml", text)
        with pytest.raises(ConfigError, match=pattern) as err:
            load_config(path)
        assert str(path) in str(err.value)


def test_type_rule_widenings(tmp_path):
    cfg = load_config(write(tmp_path / "ok.yaml", """
MODEL:
  ROI_HEADS: {SCORE_THRESH_TEST: 1}      # int where float expected -> float
  PIXEL_STD: !!python/tuple [57.4, 57.1, 58.4]
SOLVER:
  WEIGHT_DECAY_BIAS: 0.0001              # default None takes anything
  BASE_LR: 1e-4                          # YAML 1.1 reads this as a string; we read a float
"""))
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 1.0
    assert type(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST) is float
    assert cfg.MODEL.PIXEL_STD == [57.4, 57.1, 58.4]
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0001 and cfg.SOLVER.BASE_LR == 1e-4
    base = write(tmp_path / "b.yaml", "SOLVER: {WEIGHT_DECAY_BIAS: 0.001}\n")
    child = write(tmp_path / "c.yaml", "_BASE_: b.yaml\nSOLVER: {WEIGHT_DECAY_BIAS: null}\n")
    cfg = load_config(child)
    # typed by the default (None), not by the base's float
    assert base.exists() and cfg.SOLVER.WEIGHT_DECAY_BIAS is None


def test_unreadable_files_give_config_errors_naming_the_path(tmp_path):
    missing = tmp_path / "no_such.yaml"
    with pytest.raises(ConfigError, match="config file not found") as err:
        load_config(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = write(tmp_path / "bad.yaml", "MODEL:\n  ROI_HEADS: {NUM_CLASSES: 4\nSEED: 1\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line \d+") as err:
        load_config(bad)
    assert str(bad) in str(err.value)
    bad_indent = write(tmp_path / "bad2.yaml", "MODEL:\n  MASK_ON: true\n MASK_ON: false\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad_indent)
    for text, what in (("- MODEL\n- SEED\n", "got list"), ("just text\n", "got str"),
                       ("", "is empty")):
        path = write(tmp_path / "shape.yaml", text)
        with pytest.raises(ConfigError, match=what) as err:
            load_config(path)
        assert str(path) in str(err.value)
    binary = tmp_path / "model_final.pth.yaml"
    binary.write_bytes(b"\x80\x02}q\x00(X\xff\xfe")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)
    dup = write(tmp_path / "dup.yaml", "SEED: 1\nMODEL: {MASK_ON: true}\nSEED: 2\n")
    with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'SEED'"):
        load_config(dup)


def test_renamed_detectron2_keys_are_mapped(tmp_path):
    old = write(tmp_path / "v1.yaml", """
VERSION: 1
MODEL:
  WEIGHT: old.pkl
  RPN_HEAD: {NAME: StandardRPNHead}
  RPN:
    ANCHOR_SIZES: [[16, 32]]
    ANCHOR_ASPECT_RATIOS: [[1.0]]
  RETINANET:
    ANCHOR_SIZES: [[99]]
    ANCHOR_STRIDES: [8]
  ROI_HEADS: {SCORE_THRESH: 0.2, NMS: 0.4}
TEST:
  DETECTIONS_PER_IMG: 77
  AUG_ON: true
  AUG_MIN_SIZES: [500]
""")
    cfg = load_config(old)
    assert cfg.VERSION == 2 and cfg.MODEL.WEIGHTS == "old.pkl"
    assert cfg.MODEL.RPN.HEAD_NAME == "StandardRPNHead" and "RPN_HEAD" not in cfg.MODEL
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[16, 32]]  # RPN's pair, for GeneralizedRCNN
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[1.0]]
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.2
    assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.4
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 77 and cfg.TEST.AUG.ENABLED is True
    assert cfg.TEST.AUG.MIN_SIZES == [500]
    both = write(tmp_path / "both.yaml", "MODEL: {WEIGHT: a.pkl, WEIGHTS: b.pkl}\n")
    with pytest.raises(ConfigError, match="both 'MODEL.WEIGHT'.*'MODEL.WEIGHTS'"):
        load_config(both)
    cfg = get_default_config().merge_from_list(["TEST.DETECTIONS_PER_IMG", "20"])
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 20


# -- merge_from_list ------------------------------------------------------------------------------

def test_merge_from_list_parses_yaml_literals_and_validates():
    cfg = get_default_config()
    assert cfg.merge_from_list([
        "MODEL.ROI_HEADS.NUM_CLASSES", "4",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3",
        "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.IN_FEATURES", "[p2, p3]",
        "INPUT.MIN_SIZE_TRAIN", "(640, 672)",
        "SOLVER.BASE_LR", "1e-4",
        "SOLVER.WEIGHT_DECAY_BIAS", "null",
        "TEST.AUG.ENABLED", "true",
        "TEST.AUG.MAX_SIZE", "2000",
        "MODEL.RPN.NMS_THRESH", "1",
    ]) is cfg
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4 and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.3
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.ROI_HEADS.IN_FEATURES == ["p2", "p3"]
    assert cfg.INPUT.MIN_SIZE_TRAIN == [640, 672] and cfg.SOLVER.BASE_LR == 1e-4
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS is None and cfg.TEST.AUG.ENABLED is True
    assert cfg.TEST.AUG.MAX_SIZE == 2000 and type(cfg.MODEL.RPN.NMS_THRESH) is float

    with pytest.raises(ConfigError, match="unknown config key 'MODEL.ROI_HEADS.NUM_CLASS'.*"
                                          "did you mean 'MODEL.ROI_HEADS.NUM_CLASSES'"):
        cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASS", "4"])
    with pytest.raises(ConfigError, match="'MODEL.ROI_HEADS.NUM_CLASSES' expects int, got str"):
        cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", "four"])
    with pytest.raises(ConfigError, match="'TEST.AUG' is a section"):
        cfg.merge_from_list(["TEST.AUG", "true"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        cfg.merge_from_list(["SEED"])
    with pytest.raises(ConfigError, match="invalid YAML"):
        cfg.merge_from_list(["MODEL.PIXEL_MEAN", "[1, 2"])
    with pytest.raises(ConfigError, match="'VERSION' cannot be overridden"):
        cfg.merge_from_list(["VERSION", "1"])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4  # failed overrides left it alone


def test_load_config_overrides_are_applied_last_and_validated(fixtures_dir):
    path = fixtures_dir / "cascade_gn_dconv" / "config.yaml"
    cfg = load_config(path, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5", "TEST.AUG.FLIP", "false"])
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.5 and cfg.TEST.AUG.FLIP is False
    assert cfg.is_frozen() and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4
    with pytest.raises(ConfigError, match="unknown config key 'TEST.AUG.FLIPS'"):
        load_config(path, ["TEST.AUG.FLIPS", "false"])
