#!/usr/bin/env bash
# GPU check: the cuda-marked tests and a GPU benchmark table, in under 8 minutes, all on stdout.
#
#     bash benchmarks/gpu_check.sh          (from the repository root or anywhere)
#
# Made for a lent machine with a bare Python (python3 >= 3.11 with torch 2.11+, torchvision,
# numpy, pillow, opencv-python-headless, tifffile, pyyaml, pytest, pytest-timeout, safetensors)
# and no network:
#   * the project is NOT pip-installed: cellseg.{app,core,trainer,resources} are made
#     importable by symlinks in /tmp/cellseg_pkg/cellseg/ (setup.py's package mapping);
#   * packages missing there travel as wheels in .whl/ (ignored by git; carry it) and are
#     unpacked into /tmp/cellseg_site. Prepared with
#         python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#             --implementation cp --platform manylinux_2_28_x86_64 \
#             --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VER
#     for: pycocotools==2.0.11 (RLE masks, COCO AP; 0.4 MB), ensemble-boxes==1.0.9 (WBF; pure
#     Python, needs numba + pandas, present there; 24 kB).
#     Not shipped: PySide6-Essentials + shiboken6 (about 90 MB, over the 64 MiB carry limit
#     with the 62 MB of fixtures), hence not pytest-qt either (without a Qt binding its plugin
#     stops pytest at start-up), qtawesome, QtPy, pyqtgraph: the app-on-CUDA test
#     (tests/app/test_cuda_app.py) then says why it does not run and the rest still runs;
#   * fixtures come from $CELLSEG_SHARED (default: .gpu/shared, a copy of ../shared holding
#     fixtures/detectron2/ and data/nuclei/; carry it too).
#
# Environment overrides: PYTHON (default python3), CELLSEG_SHARED, GPU_CHECK_BUDGET (seconds,
# default 450). Every step prints a header, runs under a hard timeout cut to the time left, and
# a failing step does not stop the next; the summary at the end lists each step's status and the
# exit status is 1 if any step failed.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
export CELLSEG_SHARED="${CELLSEG_SHARED:-$REPO/.gpu/shared}"
export QT_QPA_PLATFORM=offscreen
export PYTHONDONTWRITEBYTECODE=1
SITE=/tmp/cellseg_site
PKG=/tmp/cellseg_pkg
SUMMARY=()
FAILED=0
SECONDS=0

header() { printf '\n==================== %s (t=%ss) ====================\n' "$1" "$SECONDS"; }

# run_step NAME MAX_SECONDS CMD...: a hard timeout of min(MAX, time left); never stops the script
run_step() {
    local name="$1" max="$2"; shift 2
    local left=$((BUDGET - SECONDS))
    header "$name"
    if [ "$left" -lt 15 ]; then
        echo "skipped: the ${BUDGET}s budget is spent"
        SUMMARY+=("$name: skipped (no time left)")
        return 0
    fi
    local limit=$((max < left ? max : left))
    echo "(timeout ${limit}s)"
    timeout -k 10 "$limit" "$@" 2>&1
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$name: ok (${SECONDS}s elapsed)")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        SUMMARY+=("$name: TIMED OUT after ${limit}s")
        FAILED=1
    else
        SUMMARY+=("$name: FAILED (exit $rc)")
        FAILED=1
    fi
    return 0
}

header "setup: wheels, package links, fixtures"
rm -rf "$PKG" "$SITE" && mkdir -p "$PKG/cellseg" "$SITE"
: > "$PKG/cellseg/__init__.py"
for part in app core trainer resources; do ln -s "$REPO/$part" "$PKG/cellseg/$part"; done
WHEELS=()
for w in "$REPO"/.whl/*.whl; do
    [ -f "$w" ] || continue
    dist="$(basename "$w" | cut -d- -f1)"
    if "$PY" -c "import importlib.metadata as m; m.version('$dist')" 2> /dev/null; then
        echo "wheel $(basename "$w"): $dist is installed already, not used"
    else
        WHEELS+=("$w")
    fi
done
if [ "${#WHEELS[@]}" -gt 0 ]; then
    echo "installing into $SITE: $(printf '%s ' "${WHEELS[@]##*/}")"
    if ! timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
            --target "$SITE" "${WHEELS[@]}" 2>&1; then
        # no pip, or pip refused: a wheel is a zip archive laid out for site-packages
        echo "pip could not install the wheels; unpacking them"
        for w in "${WHEELS[@]}"; do timeout 60 "$PY" -m zipfile -e "$w" "$SITE"; done
    fi
else
    echo "no wheels to install: using the packages this Python has"
fi
export PYTHONPATH="$PKG:$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
echo "python: $(command -v "$PY")"
echo "CELLSEG_SHARED=$CELLSEG_SHARED"
[ -d "$CELLSEG_SHARED/fixtures/detectron2" ] || echo "WARNING: no fixtures at $CELLSEG_SHARED/fixtures/detectron2"

run_step "environment" 60 "$PY" - <<'EOF'
import importlib, platform, sys
import torch, torchvision
print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, CUDA build {torch.version.cuda}")
import cellseg.core.engine
print("cellseg.core from", cellseg.core.__file__)
for name in ("pycocotools", "ensemble_boxes", "PySide6", "pytestqt", "pytest_timeout"):
    try:
        importlib.import_module(name)
        print(f"{name}: available")
    except Exception as exc:
        print(f"{name}: missing ({type(exc).__name__}: {exc})")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability "
              f"{p.major}.{p.minor}")
else:
    print("no CUDA GPU: torch.cuda.is_available() is False (the cuda tests skip, saying so)")
EOF
command -v nvidia-smi > /dev/null && timeout 20 nvidia-smi -L 2>&1

TIMEOUT_OPT=()
"$PY" -c "import pytest_timeout" 2> /dev/null && TIMEOUT_OPT=(--timeout 240)

run_step "pytest -m cuda tests/test_cuda.py" 240 \
    "$PY" -m pytest -p no:cacheprovider -m cuda tests/test_cuda.py -v -rs --durations 5 \
    ${TIMEOUT_OPT[@]+"${TIMEOUT_OPT[@]}"} -o addopts=""

if "$PY" -c "import PySide6.QtWidgets, pytestqt" 2> /dev/null; then
    run_step "pytest -m cuda tests/app/test_cuda_app.py" 90 \
        "$PY" -m pytest -p no:cacheprovider -m cuda tests/app/test_cuda_app.py -v -rs \
        ${TIMEOUT_OPT[@]+"${TIMEOUT_OPT[@]}"} -o addopts=""
else
    header "pytest -m cuda tests/app/test_cuda_app.py"
    why="$("$PY" -c "import PySide6.QtWidgets, pytestqt" 2>&1 | tail -n 1)"
    echo "SKIPPED: the app cannot start here: $why (PySide6-Essentials + pytest-qt do not fit"
    echo "the 64 MiB carry limit next to the fixtures; run it where the app is installed)"
    SUMMARY+=("app on CUDA: skipped ($why)")
fi

run_step "benchmark: exact vs fast, plain and TTA, X-152 at 1024px (benchmarks/fast_mode.py)" 170 \
    "$PY" benchmarks/fast_mode.py --device cuda --tta --full-size --repeat 3 \
    --models mask_rcnn cascade_gn_dconv pointrend demo

header "summary (${SECONDS}s)"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
