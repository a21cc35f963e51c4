"""The Trainer's loop and hooks on a small real model: call order, the NaN/inf check before the
weights change, and a stop request honoured at the end of the iteration it arrived in.

The full runs (files, logs, checkpoints, resume, two processes) are in test_trainer_run.py.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cellseg.trainer.hooks import STOP_FILE, LossCheck, StopRequest
from cellseg.trainer.loop import HookBase, Trainer, TrainingError


class Regressor(nn.Module):
    """Least squares on one batch; ``poison_at`` makes that iteration's loss NaN."""

    def __init__(self, poison_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)
        self.poison_at, self.calls = poison_at, 0

    def forward_train(self, images, targets):
        x = torch.stack(images)
        y = torch.stack([t["y"] for t in targets])
        err = self.linear(x) - y
        loss_b = err.abs().mean()
        if self.calls == self.poison_at:
            loss_b = loss_b * float("nan")
        self.calls += 1
        return {"loss_a": (err ** 2).mean(), "loss_b": loss_b}


def batches():
    g = torch.Generator().manual_seed(1)
    while True:
        x = torch.randn(2, 4, generator=g)
        yield list(x), [{"y": x[i, :1] * 3.0} for i in range(2)]


class Recorder(HookBase):
    def __init__(self, log: list):
        self.log = log

    def before_train(self):
        self.log.append("before_train")

    def before_step(self):
        self.log.append(f"before_step {self.trainer.iter}")

    def after_backward(self):
        self.log.append(f"after_backward {self.trainer.iter}")

    def after_step(self):
        self.log.append(f"after_step {self.trainer.iter}")

    def after_train(self):
        self.log.append(f"after_train {self.trainer.status}")


def make_trainer(model: nn.Module, hooks, start: int = 0, max_iter: int = 3) -> Trainer:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return Trainer(model, batches(), optimizer, scheduler, scaler, None, torch.device("cpu"),
                   start, max_iter, distributed=False, world=1, amp=False, hooks=hooks)


def test_hooks_are_called_around_each_step_in_order():
    log: list[str] = []
    model = Regressor()
    trainer = make_trainer(model, [Recorder(log)], start=5, max_iter=8)
    before = model.linear.weight.detach().clone()
    trainer.train()
    steps = [f"{stage} {i}" for i in (5, 6, 7)
             for stage in ("before_step", "after_backward", "after_step")]
    assert log == ["before_train", *steps, "after_train finished"]
    assert trainer.status == "finished" and trainer.iter == 7 and not trainer.stopping
    assert sorted(trainer.losses) == ["loss_a", "loss_b"]
    assert all(math.isfinite(v) for v in trainer.losses.values())
    assert not torch.equal(model.linear.weight, before)  # three SGD steps were taken


def test_nan_loss_ends_training_before_the_weights_change():
    class KeepWeights(HookBase):
        def after_step(self):
            weights.append(model.linear.weight.detach().clone())

    log: list[str] = []
    weights: list[torch.Tensor] = []
    model = Regressor(poison_at=1)
    trainer = make_trainer(model, [LossCheck(), Recorder(log), KeepWeights()])
    with pytest.raises(TrainingError, match=r"NaN or infinite at iteration 1 \(loss_a="):
        trainer.train()
    # the update of iteration 1 never ran: the weights are those after iteration 0
    assert len(weights) == 1 and torch.equal(model.linear.weight, weights[0])
    # LossCheck raised first, so the recorder never saw iteration 1's backward
    assert log[-2:] == ["before_step 1", "after_train None"]
    assert trainer.status is None


def test_stop_file_stops_at_the_end_of_the_iteration_it_appeared_in(tmp_path):
    stop = StopRequest(tmp_path, rank=0)

    class WriteStop(HookBase):  # as the app's Stop button does, during iteration 1
        def before_step(self):
            if self.trainer.iter == 1:
                (tmp_path / STOP_FILE).write_text("")

    log: list[str] = []
    trainer = make_trainer(Regressor(), [stop, WriteStop(), Recorder(log)], max_iter=10)
    trainer.train()
    assert trainer.status == "stopped" and trainer.iter == 1
    assert log[-2:] == ["after_step 1", "after_train stopped"]
    assert not (tmp_path / STOP_FILE).exists()  # rank 0 removes it once the run ended
