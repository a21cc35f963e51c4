"""``cellseg doctor``: what a bug report needs -- versions, devices, settings, models that load.

Every section is gathered independently: a broken CUDA driver, a missing PySide6 or a model that
does not load is *reported* (and makes the exit status 1), it never stops the rest of the report.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HELP = "print versions, devices, settings and whether the configured models load (bug reports)"
DESCRIPTION = """\
Print what a bug report needs: the versions of Python, cellseg-gui, PyTorch, torchvision,
PySide6/Qt and CUDA; the devices PyTorch finds; where the app keeps its settings; and, for each
model configured in the app (and the bundled demo models, and any --model given here), whether it
loads. Loading builds the model and reads its checkpoint on --device (default cpu); no image is
run. Exit status 0 when everything that was checked is fine, 1 otherwise."""

PACKAGES = (  # (label, import name, distribution name)
    ("torch", "torch", "torch"),
    ("torchvision", "torchvision", "torchvision"),
    ("PySide6", "PySide6", "PySide6-Essentials"),
    ("numpy", "numpy", "numpy"),
    ("opencv", "cv2", "opencv-python-headless"),
    ("pycocotools", "pycocotools", "pycocotools"),
    ("tifffile", "tifffile", "tifffile"),
    ("qtawesome", "qtawesome", "qtawesome"),
    ("ensemble-boxes", "ensemble_boxes", "ensemble-boxes"),
)


@dataclass
class ModelCheck:
    name: str
    config: str
    weights: str
    ok: bool | None  # None: not configured
    detail: str
    seconds: float | None = None


@dataclass
class Report:
    versions: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    models: list[ModelCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(m.ok is not False for m in self.models)


def add_arguments(p) -> None:
    p.add_argument("--settings", metavar="INI",
                   help="read the app's settings from this INI file (as cellseg-gui --settings) "
                        "instead of the user's settings")
    p.add_argument("--model", nargs=2, action="append", default=[], metavar=("CONFIG", "WEIGHTS"),
                   help="also check that this model loads; repeatable")
    p.add_argument("--device", default="cpu",
                   help="device to load the models on: cpu (default), cuda[:N] or auto")
    p.add_argument("--no-load", action="store_true", help="list the models without loading them")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


# ---------------------------------------------------------------------- sections
def _version_of(module_name: str, dist: str) -> str:
    from importlib import import_module, metadata

    try:
        module = import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - a broken install is exactly what to report
        return f"NOT IMPORTABLE ({type(exc).__name__}: {exc})"
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. a bundle without dist-info
            version = "unknown version"
    return str(version)


def versions(report: Report) -> None:
    from importlib import metadata

    v = report.versions
    try:
        v["cellseg-gui"] = metadata.version("cellseg-gui")
    except metadata.PackageNotFoundError:
        v["cellseg-gui"] = "unknown (not installed as a distribution)"
    if getattr(sys, "frozen", False):
        v["cellseg-gui"] += f" (bundle at {Path(sys.executable).parent})"
    v["Python"] = f"{platform.python_version()} ({platform.python_implementation()}, " \
                  f"{sys.executable})"
    v["OS"] = f"{platform.platform()} ({platform.machine()})"
    for label, module_name, dist in PACKAGES:
        v[label] = _version_of(module_name, dist)
        if v[label].startswith("NOT IMPORTABLE"):
            report.problems.append(f"{label} cannot be imported")
    try:
        from PySide6.QtCore import qVersion

        v["Qt"] = qVersion()
    except Exception:  # noqa: BLE001 - already reported under PySide6
        pass
    try:
        import torch

        v["CUDA (torch build)"] = torch.version.cuda or "none (CPU-only build of torch)"
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        v["cuDNN"] = str(cudnn) if cudnn else "none"
    except Exception:  # noqa: BLE001 - torch missing is reported above
        pass


def devices(report: Report) -> None:
    d = report.devices
    try:
        import torch
    except Exception:  # noqa: BLE001
        d["cpu"] = f"{os.cpu_count()} logical cores (torch missing: no inference possible)"
        return
    d["cpu"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
                f"torch uses {torch.get_num_threads()} threads")
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                d[f"cuda:{i}"] = (f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute "
                                  f"capability {p.major}.{p.minor}")
        else:
            why = "torch is a CPU-only build" if not torch.version.cuda else \
                "no NVIDIA GPU or driver found"
            d["cuda"] = f"not available ({why})"
    except Exception as exc:  # noqa: BLE001 - a broken driver must still be reported
        d["cuda"] = f"ERROR while querying CUDA: {type(exc).__name__}: {exc}"
        report.problems.append("CUDA query failed")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        d["mps"] = "available (Apple GPU; the app runs models on cpu or cuda)"


def settings(report: Report, ini: str | None) -> list[tuple[str, str, str]]:
    """Fill the settings section; return the (key, config, weights) of the configured models.

    The app's own settings class is used (imported here, lazily) so that the store and its keys
    are exactly the app's: a native store (Linux .conf, macOS plist, Windows registry) is only
    readable through QSettings.
    """
    s = report.settings
    try:
        from cellseg.app.settings import MODEL_KEYS, AppSettings
    except Exception as exc:  # noqa: BLE001 - PySide6 missing: still report the rest
        s["file"] = f"cannot be read ({type(exc).__name__}: {exc})"
        report.problems.append("the app's settings cannot be read")
        return []
    if ini is not None and not Path(ini).is_file():
        from cellseg.core.errors import CellsegError

        raise CellsegError(f"settings file not found: {ini}")
    app_settings = AppSettings.from_file(ini) if ini else AppSettings()
    where = app_settings.q.fileName()
    exists = Path(where).exists() if where.startswith("/") or ":" in where[:3] else True
    s["file"] = where + ("" if exists else " (not written yet: first start)")
    s["device"] = app_settings.device()
    recent = app_settings.recent()
    s["recent"] = f"{len(recent)} recent item(s)" + (f", latest {recent[0]}" if recent else "")
    models = []
    for key in MODEL_KEYS:
        config, weights = app_settings.model_paths(key)
        models.append((key, config, weights))
    return models


def check_model(name: str, config: str, weights: str, device: str, load: bool) -> ModelCheck:
    if not config or not weights:
        return ModelCheck(name, config, weights, None, "not configured")
    missing = [p for p in (config, weights) if not Path(p).is_file()]
    if missing:
        return ModelCheck(name, config, weights, False, "file not found: " + ", ".join(missing))
    if not load:
        return ModelCheck(name, config, weights, None, "files present (not loaded: --no-load)")
    from cellseg.core.engine import load_predictor

    start = time.perf_counter()
    try:
        predictor = load_predictor(config, weights, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer to "does it load"
        from cellseg.core.errors import CellsegError

        message = str(exc) if isinstance(exc, CellsegError) else f"{type(exc).__name__}: {exc}"
        return ModelCheck(name, config, weights, False, message, time.perf_counter() - start)
    cfg = predictor.cfg
    heads = cfg.MODEL.ROI_HEADS.NAME
    if cfg.MODEL.MASK_ON:
        heads += f" + {cfg.MODEL.ROI_MASK_HEAD.NAME}"
    detail = (f"loads: {heads}, {predictor.num_classes} class(es), "
              f"test size {cfg.INPUT.MIN_SIZE_TEST}, on {predictor.device}")
    return ModelCheck(name, config, weights, True, detail, time.perf_counter() - start)


def collect(ini: str | None = None, extra_models=(), device: str = "cpu",
            load: bool = True) -> Report:
    report = Report()
    versions(report)
    devices(report)
    configured = settings(report, ini)
    try:
        from cellseg.resources import sample

        demo = sample()
        for m in demo.models:
            configured.append((f"demo {m.slot} (bundled)", str(m.config), str(m.weights)))
        if not demo.has_model:
            report.settings["sample"] = f"{demo.image} (no demo model in this build)"
    except Exception as exc:  # noqa: BLE001
        report.settings["sample"] = f"missing ({exc})"
    for i, (config, weights) in enumerate(extra_models):
        configured.append((f"--model {i + 1}", config, weights))
    report.models = [check_model(n, c, w, device, load) for n, c, w in configured]
    return report


# ---------------------------------------------------------------------- output
def format_report(report: Report) -> str:
    lines = ["cellseg doctor"]

    def section(title: str, items: dict[str, str]) -> None:
        lines.append(f"\n{title}")
        width = max((len(k) for k in items), default=0)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in items.items())

    section("Versions", report.versions)
    section("Devices", report.devices)
    section("Settings", report.settings)
    lines.append("\nModels")
    width = max((len(m.name) for m in report.models), default=0)
    for m in report.models:
        status = {True: "OK", False: "FAILED", None: "--"}[m.ok]
        took = f" ({m.seconds:.1f} s)" if m.seconds is not None and m.ok else ""
        lines.append(f"  {m.name.ljust(width)}  {status}  {m.detail}{took}")
        if m.config:
            lines.append(f"  {''.ljust(width)}      config  {m.config}")
            lines.append(f"  {''.ljust(width)}      weights {m.weights}")
    if report.problems:
        lines.append("\nProblems")
        lines.extend(f"  - {p}" for p in report.problems)
    failed = [m.name for m in report.models if m.ok is False]
    lines.append("\n" + ("all checks passed" if report.ok else
                         "some checks FAILED" + (f": models {', '.join(failed)}" if failed else "")))
    return "\n".join(lines)


def run(args) -> int:
    from cellseg.core.errors import CellsegError

    if args.device not in ("cpu", "auto") and not args.device.startswith("cuda"):
        raise CellsegError(f"unknown device {args.device!r} (expected cpu, cuda[:N] or auto)")
    report = collect(args.settings, [tuple(m) for m in args.model], args.device,
                     load=not args.no_load)
    if args.json:
        data = asdict(report)
        data["ok"] = report.ok
        print(json.dumps(data, indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1
