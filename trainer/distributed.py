"""Multi-process training through ``torch.distributed`` (Detectron2's ``launch`` semantics).

``num_processes`` processes per machine (one per GPU with NCCL, or CPU processes with gloo) on
``num_machines`` machines; global rank = ``machine_rank * num_processes + local rank``. Machine 0
hosts the rendezvous at ``dist_url`` (``tcp://HOST:PORT``; ``auto`` picks a free local port and
works on one machine only). ``SOLVER.IMS_PER_BATCH`` is the total batch over all ranks, as in
Detectron2: each rank takes ``IMS_PER_BATCH / world_size`` images per iteration from its own
shard of the data.
"""
from __future__ import annotations

import socket
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cellseg.core.errors import CellsegError

DEFAULT_TIMEOUT = timedelta(minutes=30)


class DistributedError(CellsegError):
    """A distributed run could not start or one of its processes failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(worker, args: tuple, num_processes: int = 1, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str = "auto", backend: str = "gloo",
           spawn: bool = False):
    """Run ``worker(rank, world, local_rank, *args)`` in every process; returns the single
    process's result (None for multi-process runs, whose results are on disk).

    A single process runs in this process without a process group, unless ``spawn``: then it
    is spawned and joins a one-member group like any rank of a larger run (e.g. to check an
    NCCL setup on one GPU)."""
    world = num_processes * num_machines
    if num_processes < 1 or num_machines < 1:
        raise DistributedError("--num-processes/--num-gpus and --num-machines must be >= 1")
    if not 0 <= machine_rank < num_machines:
        raise DistributedError(f"--machine-rank {machine_rank} is outside 0..{num_machines - 1}")
    if backend == "nccl" and torch.cuda.device_count() < num_processes:
        raise DistributedError(f"{num_processes} GPU processes asked for but PyTorch sees "
                               f"{torch.cuda.device_count()} GPU(s)")
    if world == 1 and not spawn:
        return worker(0, 1, 0, *args)
    if dist_url == "auto":
        if num_machines > 1:
            raise DistributedError("--dist-url auto works on one machine only; give "
                                   "tcp://HOST:PORT of machine 0 to every machine")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    try:
        mp.start_processes(_process, nprocs=num_processes, start_method="spawn",
                           args=(worker, world, num_processes, machine_rank, dist_url, backend,
                                 args))
    except mp.ProcessExitedException as exc:
        raise DistributedError(f"training process (local rank {exc.error_index}) exited with "
                               f"code {exc.exit_code}; its message is above") from None
    except mp.ProcessRaisedException as exc:
        raise DistributedError(f"a training process failed:\n{exc}") from None
    return None


def _process(local_rank, worker, world, num_processes, machine_rank, dist_url, backend, args):
    from .worker import set_threads

    rank = machine_rank * num_processes + local_rank
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        set_threads(num_processes)
    try:
        dist.init_process_group(backend, init_method=dist_url, world_size=world, rank=rank,
                                timeout=DEFAULT_TIMEOUT)
    except Exception as exc:
        print(f"cellseg train: error: rank {rank} cannot join the process group at {dist_url} "
              f"({backend}): {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        worker(rank, world, local_rank, *args)
    except CellsegError as exc:
        print(f"cellseg train: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
