"""Build the one-folder bundle from app.spec and check that it works.

    .venv/bin/pip install pyinstaller            # the ``packaging`` extra; not a run-time need
    .venv/bin/python packaging/build_bundle.py   # build + checks (--skip-build: checks only)

Checks: the bundle holds the sample image, its licence note and (when the repository has them)
the demo models, Qt's offscreen and xcb platform plugins (Linux) and qtawesome's icon fonts; the
bundled ``cellseg-gui --sample --screenshot`` starts offscreen, predicts with the demo models and
saves a screenshot; ``cellseg-gui --cli doctor`` runs. Prints (and writes to
build/bundle_report.json) the build time, the bundle size and the start-to-screenshot time.
Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cellseg.resources import MODEL_FOLDERS

REPO = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build(dist: Path, work: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(dist), "--workpath", str(work), str(REPO / "app.spec")],
                   cwd=REPO, check=True)
    return time.perf_counter() - start


def check(bundle: Path, timeout: int) -> tuple[list[str], dict]:
    problems, figures = [], {}
    exe = bundle / ("cellseg-gui.exe" if os.name == "nt" else "cellseg-gui")
    internal = bundle / "_internal"
    if not exe.is_file():
        return [f"no executable at {exe}"], figures
    sample = internal / "cellseg" / "resources" / "sample"
    wanted = [sample / "nuclei.tif", sample / "LICENSE.md"]
    for _, folder in MODEL_FOLDERS:
        if (REPO / "resources" / "sample" / folder / "model_final.pth").is_file():
            wanted += [sample / folder / "config.yaml", sample / folder / "model_final.pth"]
    problems += [f"missing from the bundle: {p.relative_to(bundle)}" for p in wanted
                 if not p.is_file()]
    plugins = {p.name for p in internal.rglob("platforms/*") if p.is_file()}
    figures["qt_platform_plugins"] = sorted(plugins)
    if sys.platform.startswith("linux"):
        for name in ("libqoffscreen.so", "libqxcb.so"):
            if name not in plugins:
                problems.append(f"Qt platform plugin {name} missing")
    fonts = sorted(p.name for p in internal.rglob("qtawesome/fonts/*.ttf"))
    figures["qtawesome_fonts"] = fonts
    if not fonts:
        problems.append("qtawesome fonts missing")

    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        (Path(tmp) / "settings.ini").write_text("")  # a fresh user: no models configured
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        start = time.perf_counter()
        run = subprocess.run([str(exe), "--sample", "--screenshot", str(shot), "--settings",
                              str(Path(tmp) / "settings.ini"), "--device", "cpu"],
                             capture_output=True, text=True, timeout=timeout, env=env)
        figures["start_to_screenshot_s"] = round(time.perf_counter() - start, 1)
        if run.returncode != 0 or not shot.is_file() or shot.stat().st_size < 10_000:
            problems.append(f"bundled --sample --screenshot failed (rc {run.returncode}): "
                            f"{run.stderr.strip()[-2000:]}")
        else:
            keep = REPO / "build" / "bundle_screenshot.png"
            shutil.copy(shot, keep)
            figures["screenshot"] = str(keep)
        doctor = subprocess.run([str(exe), "--cli", "doctor", "--settings",
                                 str(Path(tmp) / "settings.ini")],
                                capture_output=True, text=True, timeout=timeout, env=env)
        figures["doctor_rc"] = doctor.returncode
        figures["doctor_tail"] = doctor.stdout.strip().splitlines()[-1:] if doctor.stdout else []
        if doctor.returncode != 0 or "Versions" not in doctor.stdout:
            problems.append(f"bundled --cli doctor failed (rc {doctor.returncode}): "
                            f"{(doctor.stdout + doctor.stderr).strip()[-2000:]}")
    return problems, figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", default=str(REPO / "dist"), help="where the bundle goes")
    p.add_argument("--work", default=str(REPO / "build" / "pyinstaller"))
    p.add_argument("--skip-build", action="store_true", help="check an existing bundle only")
    p.add_argument("--timeout", type=int, default=600, help="seconds for each bundled run")
    args = p.parse_args(argv)
    dist = Path(args.dist)
    report = {}
    if not args.skip_build:
        report["build_s"] = round(build(dist, Path(args.work)), 1)
    bundle = dist / "cellseg-gui"
    report["bundle_bytes"] = folder_size(bundle)
    report["bundle_files"] = sum(1 for p in bundle.rglob("*") if p.is_file())
    problems, figures = check(bundle, args.timeout)
    report.update(figures)
    report["problems"] = problems
    out = REPO / "build" / "bundle_report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"bundle: {bundle} ({report['bundle_bytes'] / 2**30:.2f} GiB, "
          f"{report['bundle_files']} files)"
          + (f", built in {report['build_s']:.0f} s" if "build_s" in report else ""))
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
