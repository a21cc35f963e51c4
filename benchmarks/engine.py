"""Engine latency and peak memory, plain and TTA, side by side with upstream Detectron2.

    python benchmarks/engine.py [--repeat N] [--threads T] [--cases NAME ...] [--no-tta]
                                [--no-full-size] [--devices cpu cuda]
    D2_VENV=/work/d2ref python benchmarks/engine.py ...   # + upstream, same process layout

Cases: the three fixture models on the fixtures' 512x512 nuclei image (resized to 800 by their
configs, as upstream), plain and TTA; and the full-size X-152 cascade and X-101 PointRend of the
research report on a 1024x1024 image (the nuclei image tiled 2x2) at its native size
(INPUT.MIN_SIZE_TEST 0), with random weights: with D2_VENV, upstream builds its model with
torch.manual_seed(0) and saves the state dict to a temporary .pth that both engines load.

Each case starts one long-lived worker process per engine (so peak RSS is that case's alone),
each loads its model and runs one warm-up call; then the orchestrator asks them for timed
calls alternately (project, upstream, upstream, project, ...) so that load from other processes
on the machine falls on both alike, and reports the median of N calls per engine and the ratio
project/upstream (< 1: the project is faster). Both engines run with the same thread count.
Upstream runs in its own interpreter (``$D2_VENV/bin/python benchmarks/upstream_runner.py``):
nothing of cellseg imports detectron2. Without D2_VENV the upstream column is the CPU time
recorded in the fixtures' expected_outputs.json (another machine, indicative only).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared next to the checkout, or next to the folder of worktrees
SHARED = Path(os.environ.get("CELLSEG_SHARED") or next(
    (p / "shared" for p in REPO.parents if (p / "shared" / "fixtures").is_dir()), REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "detectron2"
UPSTREAM_RUNNER = Path(__file__).with_name("upstream_runner.py")
FULL_SIZE = {  # label -> config in FIXTURES
    "X-152 cascade 1024px": "cascade_mask_rcnn_X_152_32x8d_FPN_IN5k_gn_dconv.config.yaml",
    "X-101 PointRend 1024px": "pointrend_rcnn_X_101_32x8d_FPN_3x_coco.config.yaml",
}
FULL_SIZE_OPTS = ["INPUT.MIN_SIZE_TEST", "0"]
FIXTURE_MODELS = ("mask_rcnn", "cascade_gn_dconv", "pointrend")


@dataclass
class Case:
    label: str
    config: str
    weights: str | None  # None: random weights (seed 0) built by the project itself
    mode: str
    tile: int = 1
    opts: list = field(default_factory=list)


# ---------------------------------------------------------------- worker (project side)
def serve(spec: dict) -> None:
    """Project worker: load, warm up, then one timed call per ``run`` line on stdin."""
    import numpy as np
    import torch

    from cellseg.core.config import load_config
    from cellseg.core.engine import Predictor, load_predictor, resolve_device
    from cellseg.core.engine.meta_arch import build_model
    from cellseg.core.io import read_image

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    image = read_image(FIXTURES / "nuclei.png")
    image = np.ascontiguousarray(np.tile(image, (spec["tile"],) * 2 + (1,) * (image.ndim - 2)))
    if spec["weights"]:
        predictor = load_predictor(spec["config"], spec["weights"], device, spec["opts"])
    else:
        cfg = load_config(spec["config"], spec["opts"])
        torch.manual_seed(0)
        predictor = Predictor(cfg, build_model(cfg), resolve_device(device))
    tta = spec["mode"] == "tta"

    def call():
        out = predictor(image, tta=tta)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    call()  # warm-up: allocator, oneDNN/cuDNN kernel selection
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        out = call()
        reply = {"seconds": time.perf_counter() - t0, "instances": len(out),
                 "peak_rss_mb": _peak_rss_mb()}
        if device == "cuda":
            reply["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print(json.dumps(reply), flush=True)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- orchestrator
class Worker:
    """One engine's long-lived process answering ``run`` with a JSON line."""

    def __init__(self, argv: list[str], env: dict):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=REPO)
        self.replies: list[dict] = []
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = [x for x in self.log.read().strip().splitlines() if x.strip()]
            raise RuntimeError(tail[-1] if tail else f"exit code {self.proc.returncode}")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        reply = self._read()
        self.replies.append(reply)
        return reply

    def close(self, kill: bool = False) -> None:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait()
        self.log.close()


def project_argv(case: Case, device: str, threads: int) -> list[str]:
    spec = {"config": case.config, "weights": case.weights, "mode": case.mode,
            "tile": case.tile, "opts": case.opts, "device": device, "threads": threads}
    return [sys.executable, __file__, "--serve", json.dumps(spec)]


def upstream_argv(d2_python: str, case: Case, threads: int) -> list[str]:
    return [d2_python, str(UPSTREAM_RUNNER), "serve", case.config, case.weights,
            str(FIXTURES / "nuclei.png"), case.mode, "--tile", str(case.tile),
            "--threads", str(threads), "--opts", *case.opts]


def measure(case: Case, device: str, repeat: int, threads: int, env: dict,
            d2_python: str | None) -> dict:
    """Median seconds per engine over ``repeat`` alternated calls, plus peak RSS."""
    workers = {"project": Worker(project_argv(case, device, threads), env)}
    upstream_error = None
    try:
        if d2_python and device == "cpu":
            try:
                workers["upstream"] = Worker(upstream_argv(d2_python, case, threads), env)
            except RuntimeError as exc:  # still report the project's side
                upstream_error = str(exc)
        names = list(workers)
        for i in range(repeat):
            for name in (names if i % 2 == 0 else names[::-1]):
                workers[name].run()
    finally:
        failed = sys.exc_info()[0] is not None  # interrupted: do not wait for a call to end
        for w in workers.values():
            w.close(kill=failed)
    results = {name: {"seconds": statistics.median(r["seconds"] for r in w.replies),
                      "all": [round(r["seconds"], 3) for r in w.replies],
                      "instances": w.replies[-1]["instances"],
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in w.replies),
                      "peak_gpu_mb": w.replies[-1].get("peak_gpu_mb")}
               for name, w in workers.items()}
    if upstream_error:
        results["upstream_error"] = upstream_error
    return results


def recorded_upstream_seconds(model: str, mode: str):
    path = FIXTURES / model / "expected_outputs.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())[f"nuclei.png|{mode}"]["seconds"]


def build_cases(args, d2_python: str | None, tmp: Path, env: dict) -> list[tuple[Case, str]]:
    """(case, fixture model name or '') for every selected case."""
    cases = []
    modes = ("plain",) if args.no_tta else ("plain", "tta")
    for model in FIXTURE_MODELS:
        for mode in modes:
            folder = FIXTURES / model
            cases.append((Case(model, str(folder / "config.yaml"),
                               str(folder / "model_final.pth"), mode), model))
    if not args.no_full_size:
        for label, config in FULL_SIZE.items():
            cases.append((Case(label, str(FIXTURES / config), None, "plain", tile=2,
                               opts=list(FULL_SIZE_OPTS)), ""))
    if args.cases:
        cases = [c for c in cases if any(k in f"{c[0].label}|{c[0].mode}" for k in args.cases)]
    if d2_python:  # the same random weights for both engines: upstream's initialisation
        for case, _ in cases:
            if case.weights is None:
                out = tmp / (case.label.replace(" ", "_") + ".pth")
                if not out.exists():
                    subprocess.run([d2_python, str(UPSTREAM_RUNNER), "init", case.config,
                                    str(out), "--seed", "0", "--opts", *case.opts],
                                   check=True, env=env, cwd=REPO, capture_output=True)
                case.weights = str(out)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per engine")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for both engines (default: torch's default)")
    parser.add_argument("--cases", nargs="+", help="only cases whose 'label|mode' contains one "
                        "of these (e.g. cascade_gn_dconv|tta 'X-152')")
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--no-full-size", action="store_true")
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: project worker
    args = parser.parse_args()
    if args.serve:
        serve(json.loads(args.serve))
        return 0
    import torch

    # a kill (timeout, Ctrl-C) still stops the workers and removes the temporary weights
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    threads = args.threads or torch.get_num_threads()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    d2_venv = os.environ.get("D2_VENV")
    d2_python = str(Path(d2_venv) / "bin" / "python") if d2_venv else None
    if d2_python and not Path(d2_python).exists():
        print(f"D2_VENV={d2_venv} has no bin/python", file=sys.stderr)
        return 2
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {threads} threads, median of {args.repeat} alternated "
          f"calls after one warm-up; upstream: "
          f"{'Detectron2 in ' + d2_venv if d2_python else 'seconds recorded in the fixtures'}")
    header = ("case", "mode", "device", "project s", "upstream s", "project/upstream",
              "instances (proj/up)", "peak RSS MB (proj/up)", "peak GPU MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results = []
    with tempfile.TemporaryDirectory(prefix="cellseg-bench-") as tmp:
        cases = build_cases(args, d2_python, Path(tmp), env)
        for device in devices:
            for case, fixture in cases:
                try:
                    r = measure(case, device, args.repeat, threads, env, d2_python)
                except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                    print(f"| {case.label} | {case.mode} | {device} | failed: {exc} |", flush=True)
                    continue
                p, u = r["project"], r.get("upstream")
                up_s = u["seconds"] if u else (recorded_upstream_seconds(fixture, case.mode)
                                               if fixture and device == "cpu" else None)
                ratio = f"{p['seconds'] / up_s:.2f}x" if up_s else ""
                mark = "" if u or up_s is None else " (recorded)"
                if r.get("upstream_error"):
                    mark += f" (upstream failed: {r['upstream_error']})"
                inst = f"{p['instances']}/{u['instances']}" if u else str(p["instances"])
                rss = (f"{p['peak_rss_mb']:.0f}/{u['peak_rss_mb']:.0f}" if u
                       else f"{p['peak_rss_mb']:.0f}")
                gpu = f"{p['peak_gpu_mb']:.0f}" if p.get("peak_gpu_mb") else ""
                print(f"| {case.label} | {case.mode} | {device} | {p['seconds']:.2f} | "
                      f"{'' if up_s is None else f'{up_s:.2f}'}{mark} | {ratio} | {inst} | "
                      f"{rss} | {gpu} |", flush=True)
                results.append({"case": case.label, "mode": case.mode, "device": device, **r})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
