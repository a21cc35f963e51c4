"""What a training run does around its iterations, one :class:`HookBase` per concern.

* :class:`StopRequest` -- a file named ``STOP`` in the run folder, SIGTERM or SIGINT stops
  every rank at the end of the current iteration, a single process at the next layer (the
  checkpointer then writes the last completed iteration's checkpoint);
* :class:`LossCheck` -- a NaN or infinite loss ends the run with a message, before the weights
  change;
* :class:`MetricsLogger` -- ``metrics.json`` (one JSON object per line) and the console line;
* :class:`Checkpointer` -- ``model_NNNNNNN.pth`` every ``SOLVER.CHECKPOINT_PERIOD``
  iterations, and ``model_final.pth`` (or the stopped iteration's checkpoint) at the end;
* :class:`Evaluator` -- COCO AP on the validation data at the start (on request), every
  ``TEST.EVAL_PERIOD`` iterations and at the end, into ``evaluation/*.json`` and metrics.json;
* :class:`PlotWriter` -- the PNG curves from metrics.json at the end.

:func:`~cellseg.trainer.worker.train_worker` registers them in that order, so that at the end
of a run the signal handlers go first, then the console line is closed, the final checkpoint is
written, evaluated, and the curves include the final evaluation.
"""
from __future__ import annotations

import json
import math
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from .checkpointing import RunCheckpointer
from .data import DataSource
from .evaluation import evaluate_model, flatten, format_table
from .loop import HookBase, StopRequested, TrainingError

STOP_FILE = "STOP"
METRICS_FILE = "metrics.json"


class StopRequest(HookBase):
    """Asks for a stop when ``output/STOP`` exists or SIGTERM/SIGINT arrived (every rank);
    removes the STOP file when the run ends (rank 0)."""

    def __init__(self, output: Path, rank: int):
        self.file = output / STOP_FILE
        self.rank = rank
        self.signalled = False
        self._old: dict = {}
        self._aborts: list = []

    def before_train(self) -> None:
        self.trainer.stop_requested = self.requested
        self._aborts = [] if self.trainer.distributed else self._abort_hooks(self.trainer.model)

    def _abort_hooks(self, model: torch.nn.Module) -> list:
        """Hooks raising :class:`StopRequested` at the next module call (forward) or parameter
        gradient (backward) once a stop is requested; the SGD step itself is never cut, so the
        model and optimizer stay those of the last completed iteration. The file is looked at
        at most every 0.1 s. Single process only: the ranks of a distributed run must agree to
        stop at the same point (the loss all-reduce carries the request)."""
        last = [0.0]  # when the file was last looked at

        def check(*_):
            if self.signalled:
                raise StopRequested
            now = time.monotonic()
            if now - last[0] > 0.1:
                last[0] = now
                if self.file.exists():
                    raise StopRequested

        handles = [torch.nn.modules.module.register_module_forward_pre_hook(check)]
        handles += [p.register_hook(check) for p in model.parameters() if p.requires_grad]
        return handles

    def before_step(self) -> None:
        # installed at the first step, not before: a Ctrl+C during the initial evaluation
        # still interrupts at once
        if not self._old and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)

    def after_train(self) -> None:
        for handle in self._aborts:
            handle.remove()
        self._aborts = []
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        if self.rank == 0 and self.trainer.status is not None:
            self.file.unlink(missing_ok=True)

    def requested(self) -> bool:
        return self.signalled or self.file.exists()

    def _handler(self, signum, frame):
        if self.signalled and signum == signal.SIGINT:  # a second Ctrl+C: leave at once
            raise KeyboardInterrupt
        self.signalled = True


class LossCheck(HookBase):
    """Ends training when a rank-averaged loss is NaN or infinite (every rank sees the same
    values, so every rank stops here, before the weights change)."""

    def after_backward(self) -> None:
        values = self.trainer.losses
        if not all(math.isfinite(v) for v in values.values()):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise TrainingError(
                f"loss became NaN or infinite at iteration {self.trainer.iter} ({shown}): "
                "training diverged; lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable "
                "SOLVER.CLIP_GRADIENTS, then start again (or --resume from the last good "
                "checkpoint)")


class MetricsWriter:
    """Appends JSON lines to ``metrics.json`` (rank 0 only); on resume, drops the lines a killed
    run wrote after its last checkpoint so every curve stays one value per iteration."""

    def __init__(self, path: Path, start_iter: int):
        self.path = path
        if start_iter > 0 and path.is_file():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("iteration", -1) < start_iter:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the kill
            path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        elif start_iter == 0 and path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
            f.flush()


class MetricsLogger(HookBase):
    """Every ``period`` iterations, at the last one and when stopping (rank 0): the medians of
    the losses and timings since the last row, the LR, ETA and peak memory, as a metrics.json
    row and one console line (rewritten in place on a terminal)."""

    def __init__(self, writer: MetricsWriter, period: int, base_lr: float, multiplier):
        self.writer, self.period = writer, period
        self.base_lr, self.multiplier = base_lr, multiplier
        self.window: dict[str, list[float]] = {}
        self.tty = sys.stdout.isatty()

    def after_step(self) -> None:
        t = self.trainer
        values = dict(t.losses)
        values["total_loss"] = sum(values.values())
        for k, v in values.items():
            self.window.setdefault(k, []).append(v)
        self.window.setdefault("time", []).append(t.iter_time)
        self.window.setdefault("data_time", []).append(t.data_time)
        done, max_iter = t.iter + 1, t.max_iter
        if not (done % self.period == 0 or done == max_iter or t.stopping):
            return
        row = {"iteration": t.iter}
        row.update({k: statistics.median(v) for k, v in self.window.items()})
        row["lr"] = self.base_lr * self.multiplier(t.iter)
        row["eta_seconds"] = row["time"] * (max_iter - done)
        row["peak_memory_mb"] = peak_memory_mb(t.device)
        self.writer.write(row)
        self.window.clear()
        losses_text = "  ".join(f"{k.removeprefix('loss_')} {row[k]:.3f}" for k in sorted(t.losses))
        line = (f"iter {done}/{max_iter}  total_loss {row['total_loss']:.3f}  "
                f"{losses_text}  lr {row['lr']:.2e}  {row['time']:.2f} s/it  "
                f"ETA {_fmt_eta(row['eta_seconds'])}  mem {row['peak_memory_mb']:.0f} MB")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", flush=True)

    def after_train(self) -> None:
        if self.tty:
            print(flush=True)  # end the line rewritten in place


class Checkpointer(HookBase):
    """Rank 0: ``model_{iter:07d}`` every ``period`` iterations (not at the last), then
    ``model_final`` when the run finishes or the stopped iteration's checkpoint."""

    def __init__(self, checkpointer: RunCheckpointer, period: int):
        self.checkpointer, self.period = checkpointer, period

    def after_step(self) -> None:
        t = self.trainer
        done = t.iter + 1
        if not t.stopping and done < t.max_iter and self.period > 0 and done % self.period == 0:
            t.checkpoint = self.checkpointer.save(f"model_{t.iter:07d}", t.iter)

    def after_train(self) -> None:
        t = self.trainer
        if t.status == "stopped" and t.completed < t.start_iter:
            t.checkpoint = self.checkpointer.last_checkpoint()
            kept = (f"the last checkpoint is still {t.checkpoint.name}; continue with --resume"
                    if t.checkpoint else "no checkpoint was written")
            print(f"stopped before iteration {t.start_iter + 1} finished: nothing new to save; "
                  f"{kept}", flush=True)
        elif t.status == "stopped":
            name = f"model_{t.completed:07d}"
            print(f"stopping: writing checkpoint {name}.pth ...", flush=True)
            t.checkpoint = self.checkpointer.save(name, t.completed)
            print(f"stopped at iteration {t.completed + 1}: checkpoint {t.checkpoint.name} "
                  "written; continue with --resume", flush=True)
        elif t.status == "finished":
            t.checkpoint = self.checkpointer.save("model_final", t.max_iter - 1)
            print(f"finished {t.max_iter} iterations: {t.checkpoint}", flush=True)


class Evaluator(HookBase):
    """COCO AP of the model on ``val``: of the starting weights (``initial``, a fresh run),
    every ``period`` iterations (not at the last) and when the run finishes. Rank 0 evaluates
    and writes ``evaluation/*.json`` and a metrics.json row; the other ranks wait for it."""

    def __init__(self, cfg, val: DataSource | None, output: Path, rank: int,
                 writer: MetricsWriter | None, period: int, initial: bool):
        self.cfg, self.val, self.output, self.rank = cfg, val, output, rank
        self.writer, self.period, self.initial = writer, period, initial

    def before_train(self) -> None:
        t = self.trainer
        if self.rank == 0:
            (self.output / "evaluation").mkdir(exist_ok=True)
            if self.initial and self.val is not None and t.start_iter == 0:
                results = evaluate_model(t.model, self.cfg, self.val, t.device)
                _write_json(self.output / "evaluation" / "initial.json", results)
                print("validation AP of the starting weights:\n" + format_table(results),
                      flush=True)
        if t.distributed:
            torch.distributed.barrier()

    def after_step(self) -> None:
        t = self.trainer
        done = t.iter + 1
        if (t.stopping or done >= t.max_iter or self.period <= 0 or done % self.period
                or self.val is None):
            return
        if self.rank == 0:
            self._evaluate(t.iter)
        if t.distributed:
            torch.distributed.barrier()

    def after_train(self) -> None:
        if self.trainer.status == "finished" and self.rank == 0 and self.val is not None:
            self.trainer.final_eval = self._evaluate(self.trainer.max_iter - 1, final=True)

    def _evaluate(self, it: int, final: bool = False) -> dict:
        results = evaluate_model(self.trainer.model, self.cfg, self.val, self.trainer.device)
        self.writer.write({"iteration": it, **flatten(results),
                           "eval_seconds": results["seconds"]})
        name = "final" if final else f"iter_{it:07d}"
        _write_json(self.output / "evaluation" / f"{name}.json", {"iteration": it, **results})
        print(f"evaluation at iteration {it + 1}:\n" + format_table(results), flush=True)
        return results


class PlotWriter(HookBase):
    """Rank 0, when the loop ended normally: ``plots/*.png`` from metrics.json."""

    def __init__(self, output: Path):
        self.output = output

    def after_train(self) -> None:
        if self.trainer.status is not None:
            from .plots import write_plots

            write_plots(self.output / METRICS_FILE, self.output / "plots")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2 ** 20
    except ImportError:  # Windows
        return float("nan")


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)
