"""``cellseg doctor``: real settings files, real fixture checkpoints, the real entry point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from cellseg.app.cli import main


def _settings_file(path: Path, models: dict[str, tuple[str, str]]) -> Path:
    from cellseg.app.settings import AppSettings

    settings = AppSettings.from_file(path)
    for key, (config, weights) in models.items():
        settings.set_model_paths(key, config, weights)
    settings.set_device("cpu")
    settings.sync()
    assert path.is_file()
    return path


def test_reports_versions_devices_settings_and_a_model_that_does_not_load(tmp_path, fixtures_dir,
                                                                          capsys):
    cascade = fixtures_dir / "cascade_gn_dconv"
    wrong = fixtures_dir / "mask_rcnn" / "model_final.pth"  # a checkpoint of another model
    ini = _settings_file(tmp_path / "s.ini", {
        "cascade": (str(cascade / "config.yaml"), str(cascade / "model_final.pth")),
        "pointrend": (str(fixtures_dir / "pointrend" / "config.yaml"), str(wrong))})
    rc = main(["doctor", "--settings", str(ini)])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert any(line.split()[:2] == ["torch", torch.__version__] for line in lines)
    assert any(line.split()[:2] == ["torchvision", torchvision.__version__] for line in lines)
    assert any(line.split()[:1] == ["PySide6"] for line in lines)
    assert any(line.split()[:1] == ["cpu"] for line in lines)
    assert f"file    {ini}" in out and "device  cpu" in out
    cascade_line = next(line for line in lines if line.split()[:1] == ["cascade"])
    assert cascade_line.split()[1] == "OK" and "CascadeROIHeads" in cascade_line
    assert "4 class(es)" in cascade_line
    pointrend_line = next(line for line in lines if line.split()[:1] == ["pointrend"])
    assert pointrend_line.split()[1] == "FAILED"
    assert str(wrong) in pointrend_line and "does not fit" in pointrend_line
    assert lines[-1] == "some checks FAILED: models pointrend"


def test_json_report_all_good(tmp_path, fixtures_dir, capsys):
    mask_rcnn = fixtures_dir / "mask_rcnn"
    ini = _settings_file(tmp_path / "s.ini", {})
    rc = main(["doctor", "--settings", str(ini), "--json", "--model",
               str(mask_rcnn / "config.yaml"), str(mask_rcnn / "model_final.pkl")])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] is True
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["cascade"]["ok"] is None and by_name["cascade"]["detail"] == "not configured"
    assert by_name["--model 1"]["ok"] is True
    assert by_name["--model 1"]["weights"] == str(mask_rcnn / "model_final.pkl")
    assert "1 class(es)" in by_name["--model 1"]["detail"]
    assert report["versions"]["torch"] == torch.__version__
    assert report["devices"]["cpu"]


def test_missing_model_file_fails_without_loading(tmp_path, fixtures_dir, capsys):
    ini = _settings_file(tmp_path / "s.ini", {})
    missing = tmp_path / "gone.pth"
    rc = main(["doctor", "--settings", str(ini), "--no-load", "--model",
               str(fixtures_dir / "mask_rcnn" / "config.yaml"), str(missing)])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"FAILED  file not found: {missing}" in out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["doctor", "--settings", str(tmp_path / "none.ini")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cellseg doctor: error: settings file not found: {tmp_path / 'none.ini'}"
    assert main(["doctor", "--device", "tpu", "--no-load"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_console_script(tmp_path):
    ini = _settings_file(tmp_path / "s.ini", {})
    exe = Path(sys.executable).with_name("cellseg")
    if not exe.exists():
        pytest.fail(f"console script not installed next to {sys.executable}")
    done = subprocess.run([str(exe), "doctor", "--settings", str(ini), "--no-load"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cellseg doctor\n\nVersions\n")
    assert "all checks passed" in done.stdout
