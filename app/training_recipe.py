"""Fine-tune dialog helpers: a CPU-sized preset, a warm-up that fits the run, the remembered run
folder (kept out of ``training.py``, which holds the dialog and the process)."""
from __future__ import annotations

from pathlib import Path

# A run a CPU finishes in minutes, not days: the research recipe's 20,000 iterations at ~80 s
# each on a CPU would take weeks.
CPU_PRESET = {"max_iter": 300, "batch": 1, "checkpoint_period": 100, "eval_period": 100,
              "device": "cpu"}
SETTINGS_KEY = "training/output"


def apply_cpu_preset(dialog) -> None:
    """Fill the dialog's settings with :data:`CPU_PRESET`."""
    p = CPU_PRESET
    dialog.max_iter.setValue(p["max_iter"])
    dialog.batch.setValue(p["batch"])
    dialog.checkpoint_period.setValue(p["checkpoint_period"])
    dialog.eval_period.setValue(p["eval_period"])
    dialog.device.setCurrentText(p["device"])


def fitted_warmup(config: str, max_iter: int, extra: list[tuple[str, str]]
                  ) -> tuple[int, int] | None:
    """``(configured, shortened)`` warm-up iterations when the config's linear warm-up would
    take half the run or more (a 30-iteration run under a 1,000-iteration warm-up learns at
    ~1e-7 and learns nothing); None when it fits or the user set it.

    Args:
        config: the Detectron2 config the run starts from.
        max_iter: iterations of the run.
        extra: the dialog's KEY VALUE overrides (a user's SOLVER.WARMUP_ITERS wins).
    """
    if any(k == "SOLVER.WARMUP_ITERS" for k, _ in extra):
        return None
    from cellseg.core.config import load_config

    warmup = int(load_config(config).SOLVER.WARMUP_ITERS)
    if warmup * 2 <= max_iter:
        return None
    return warmup, max(1, max_iter // 10)


def remembered_folder(window) -> str:
    settings = getattr(window, "settings", None)
    return str(settings.q.value(SETTINGS_KEY, "") or "") if settings is not None else ""


def remember_folder(window, folder: str | Path) -> None:
    settings = getattr(window, "settings", None)
    if settings is not None:
        settings.q.setValue(SETTINGS_KEY, str(folder))
