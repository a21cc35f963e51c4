"""The training loop: one process per rank, Detectron2's SimpleTrainer/AMPTrainer semantics.

Per iteration: next batch (this rank's shard), loss dict from ``forward_train``, a finite check
on the rank-averaged losses, backward (scaled under mixed precision), optional gradient
clipping, SGD step, LR schedule step. Rank 0 writes ``metrics.json`` (one JSON object per
line), checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations, evaluates every
``TEST.EVAL_PERIOD`` iterations and at the end, and draws the curves.

A stop request (a file named ``STOP`` in the run folder, SIGTERM or SIGINT) is honoured at the
end of the current iteration on every rank: a checkpoint is written and the run exits, to be
continued with ``--resume``. A single process does not wait for the iteration's end (one takes
a minute or more on a CPU): the request aborts the forward or backward pass at the next layer
(or an evaluation), before the SGD step, so the checkpoint holds the last completed iteration.
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cellseg.core.errors import CellsegError, ConfigError

from .checkpointing import RunCheckpointer, load_pretrained
from .data import TrainLoader, load_source
from .evaluation import evaluate_model, flatten, format_table
from .solver import build_lr_scheduler, build_optimizer, gradient_clipper, lr_multiplier

STOP_FILE = "STOP"
METRICS_FILE = "metrics.json"


class TrainingError(CellsegError):
    """Training cannot go on (diverged, nothing to train, ...)."""


@dataclass
class RunSpec:
    """Everything a rank needs besides the config (picklable, for spawned processes)."""

    output: Path
    train_json: Path
    train_root: Path
    val_json: Path | None = None
    val_root: Path | None = None
    weights: str | None = None
    resume: bool = False
    device: str = "cpu"
    log_period: int = 20
    eval_initial: bool = False
    seed: int = 0
    class_names: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    status: str  # "finished", "stopped" or "already finished"
    start_iter: int
    last_iter: int
    checkpoint: Path | None
    final_eval: dict | None = None


class _TrainForward(nn.Module):
    """Wraps the model so DistributedDataParallel's forward is ``forward_train``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.forward_train(images, targets)


class _StopFlag:
    def __init__(self, output: Path):
        self.file = output / STOP_FILE
        self.signalled = False
        self._old = {}

    def install(self):
        if threading_main():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)

    def uninstall(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handler(self, signum, frame):
        if self.signalled and signum == signal.SIGINT:  # a second Ctrl+C: leave at once
            raise KeyboardInterrupt
        self.signalled = True

    def requested(self) -> bool:
        return self.signalled or self.file.exists()

    def abort_hooks(self, model: nn.Module) -> list:
        """Hooks raising :class:`StopRequested` at the next module call (forward) or parameter
        gradient (backward) once a stop is requested; the SGD step itself is never cut, so the
        model and optimizer stay those of the last completed iteration. The file is looked at
        at most every 0.1 s. Returns the handles (``.remove()`` them). Single process only:
        ranks of a distributed run must agree to stop at the same point."""
        last = [0.0]  # when the file was last looked at

        def check(*_):
            if self.signalled:
                raise StopRequested
            now = time.monotonic()
            if now - last[0] > 0.1:
                last[0] = now
                if self.file.exists():
                    raise StopRequested

        handles = [nn.modules.module.register_module_forward_pre_hook(check)]
        handles += [p.register_hook(check) for p in model.parameters() if p.requires_grad]
        return handles


class StopRequested(Exception):
    """A stop request arrived during a forward/backward pass (see ``_StopFlag.abort_hooks``)."""


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2 ** 20
    except ImportError:  # Windows
        return float("nan")


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


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def _log(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


def optimizer_step(losses: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler,
                   scaler: torch.amp.GradScaler, clip, params: list[nn.Parameter]) -> None:
    """One update from the summed loss, in Detectron2's SimpleTrainer / AMPTrainer order:
    zero the gradients, backward (scaled under mixed precision; DDP averages the gradients
    over the ranks here), clip the unscaled gradients, SGD step, then the LR schedule's step.

    Args:
        losses: scalar, the sum of the loss dict.
        clip: :func:`~cellseg.trainer.solver.gradient_clipper`'s result or None.
        params: the trainable parameters (what ``clip`` clips).
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses).backward()
    if clip is not None:
        scaler.unscale_(optimizer)
        clip(params)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def train_worker(rank: int, world: int, local_rank: int, cfg, spec: RunSpec) -> RunResult:
    """Train on this rank (``torch.distributed`` already initialised when ``world > 1``)."""
    from cellseg.core.engine.meta_arch import build_model

    # a process group of one (launch(..., spawn=True)) still takes the distributed path
    distributed = world > 1 or (torch.distributed.is_available()
                                and torch.distributed.is_initialized())
    device = torch.device(f"cuda:{local_rank}" if spec.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(spec.seed + rank)
    s = cfg.SOLVER
    max_iter = int(s.MAX_ITER)
    batch_per_rank = int(s.IMS_PER_BATCH) // world
    amp = bool(s.AMP.ENABLED) and device.type == "cuda"

    train = load_source(spec.train_json, image_root=spec.train_root)
    val = load_source(spec.val_json, image_root=spec.val_root) if spec.val_json else None
    try:
        model = build_model(cfg).to(device)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"cannot build the model from the config: {exc}") from exc
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    checkpointer = RunCheckpointer(spec.output, model, optimizer, scheduler, scaler)
    start = checkpointer.resume() if spec.resume else 0
    if spec.resume and start > 0:
        _log(rank, f"resuming from {checkpointer.last_checkpoint().name} at iteration {start}")
    elif spec.weights:
        report = load_pretrained(model, spec.weights)
        for line in report.lines():
            _log(rank, f"initialising from {spec.weights}: {line}")
    else:
        _log(rank, "training from scratch (no starting weights)")
    if start >= max_iter:
        _log(rank, f"nothing to do: the run already reached SOLVER.MAX_ITER {max_iter}")
        return RunResult("already finished", start, start - 1, checkpointer.last_checkpoint())

    output = spec.output
    stop = _StopFlag(output)
    writer = None
    if rank == 0:
        writer = MetricsWriter(output / METRICS_FILE, start)
        (output / "evaluation").mkdir(exist_ok=True)
    if spec.eval_initial and val is not None and rank == 0 and start == 0:
        initial = evaluate_model(model, cfg, val, device)
        _write_json(output / "evaluation" / "initial.json", initial)
        _log(rank, "validation AP of the starting weights:\n" + format_table(initial))
    if distributed:
        torch.distributed.barrier()

    net = _TrainForward(model)
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[local_rank] if device.type == "cuda" else None,
            broadcast_buffers=False)
    loader = TrainLoader(train, cfg, batch_per_rank, spec.seed, rank, world, start)
    clip = gradient_clipper(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    multiplier = lr_multiplier(cfg)
    period = int(s.CHECKPOINT_PERIOD)
    eval_period = int(cfg.TEST.EVAL_PERIOD)
    window: dict[str, list[float]] = {}
    tty = sys.stdout.isatty()
    stop.install()
    it = start - 1
    completed = start - 1  # the last iteration whose SGD step ran
    status = "finished"
    last_ckpt = None
    aborts = [] if distributed else stop.abort_hooks(model)
    try:
        for it in range(start, max_iter):
            t0 = time.perf_counter()
            images, targets = next(loader)
            images, targets = _to_device(images, targets, device)
            data_time = time.perf_counter() - t0
            try:
                with torch.autocast(device.type, enabled=amp):
                    loss_dict = net(images, targets)
            except FloatingPointError as exc:
                raise TrainingError(f"training diverged at iteration {it}: {exc}; lower "
                                    "SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS") from None
            names = sorted(loss_dict)
            losses = sum(loss_dict[k] for k in names)
            # rank-averaged loss values (and the stop request) in one small all-reduce
            flags = torch.tensor([float(stop.requested())], device=device)
            vals = torch.cat([torch.stack([loss_dict[k].detach().float() for k in names]), flags])
            if distributed:
                torch.distributed.all_reduce(vals)
                vals[:-1] /= world
            values = dict(zip(names, vals[:-1].tolist()))
            if not all(math.isfinite(v) for v in values.values()):
                shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                raise TrainingError(
                    f"loss became NaN or infinite at iteration {it} ({shown}): training "
                    "diverged; lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable "
                    "SOLVER.CLIP_GRADIENTS, then start again (or --resume from the last good "
                    "checkpoint)")
            optimizer_step(losses, optimizer, scheduler, scaler, clip, params)
            completed = it
            iter_time = time.perf_counter() - t0
            values["total_loss"] = sum(v for k, v in values.items())
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            window.setdefault("time", []).append(iter_time)
            window.setdefault("data_time", []).append(data_time)
            done = it + 1
            stop_now = vals[-1].item() > 0
            if rank == 0 and (done % spec.log_period == 0 or done == max_iter or stop_now):
                row = {"iteration": it}
                row.update({k: statistics.median(v) for k, v in window.items()})
                row["lr"] = float(s.BASE_LR) * multiplier(it)
                row["eta_seconds"] = row["time"] * (max_iter - done)
                row["peak_memory_mb"] = peak_memory_mb(device)
                writer.write(row)
                window.clear()
                losses_text = "  ".join(f"{k.removeprefix('loss_')} {row[k]:.3f}"
                                        for k in names)
                line = (f"iter {done}/{max_iter}  total_loss {row['total_loss']:.3f}  "
                        f"{losses_text}  lr {row['lr']:.2e}  {row['time']:.2f} s/it  "
                        f"ETA {_fmt_eta(row['eta_seconds'])}  "
                        f"mem {row['peak_memory_mb']:.0f} MB")
                print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            if stop_now:
                status = "stopped"
                break
            if done < max_iter and period > 0 and done % period == 0 and rank == 0:
                last_ckpt = checkpointer.save(f"model_{it:07d}", it)
            if (done < max_iter and eval_period > 0 and done % eval_period == 0
                    and val is not None):
                if rank == 0:
                    _evaluate(model, cfg, val, device, it, writer, output)
                if distributed:
                    torch.distributed.barrier()
    except StopRequested:
        status = "stopped"
    finally:
        for handle in aborts:
            handle.remove()
        stop.uninstall()
        if tty and rank == 0:
            print(flush=True)
    result = RunResult(status, start, completed, None)
    if rank == 0:
        if status == "stopped" and completed < start:
            result.checkpoint = checkpointer.last_checkpoint()
            kept = (f"the last checkpoint is still {result.checkpoint.name}; continue with "
                    "--resume" if result.checkpoint else "no checkpoint was written")
            print(f"stopped before iteration {start + 1} finished: nothing new to save; {kept}",
                  flush=True)
        elif status == "stopped":
            name = f"model_{completed:07d}"
            print(f"stopping: writing checkpoint {name}.pth ...", flush=True)
            result.checkpoint = checkpointer.save(name, completed)
            print(f"stopped at iteration {completed + 1}: checkpoint {result.checkpoint.name} "
                  "written; continue with --resume", flush=True)
        else:
            result.checkpoint = checkpointer.save("model_final", max_iter - 1)
            print(f"finished {max_iter} iterations: {result.checkpoint}", flush=True)
            if val is not None:
                result.final_eval = _evaluate(model, cfg, val, device, max_iter - 1, writer,
                                              output, final=True)
        (output / STOP_FILE).unlink(missing_ok=True)
        from .plots import write_plots

        write_plots(output / METRICS_FILE, output / "plots")
    else:
        result.checkpoint = last_ckpt
    if distributed:
        torch.distributed.barrier()
    return result


def _evaluate(model, cfg, val, device, it, writer, output: Path, final: bool = False) -> dict:
    results = evaluate_model(model, cfg, val, device)
    row = {"iteration": it, **flatten(results), "eval_seconds": results["seconds"]}
    writer.write(row)
    name = "final" if final else f"iter_{it:07d}"
    _write_json(output / "evaluation" / f"{name}.json", {"iteration": it, **results})
    print(f"evaluation at iteration {it + 1}:\n" + format_table(results), flush=True)
    return results


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def set_threads(num_local_processes: int) -> None:
    """Share the CPU cores between the processes of this machine."""
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, num_local_processes)))


__all__ = ["RunSpec", "RunResult", "TrainingError", "StopRequested", "train_worker",
           "optimizer_step", "STOP_FILE", "METRICS_FILE"]
