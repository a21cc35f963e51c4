"""The app predicting on the GPU (pytest -m cuda): the Models panel's device set to cuda:0, a
fixture model run through the real window's worker thread, exact and fast precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA GPU: torch.cuda.is_available() is False"),
]

MODEL_TIMEOUT = 120_000  # ms: includes CUDA start-up in the worker thread


def test_window_predicts_on_cuda_exact_and_fast(window, qtbot, crop_folder, fast_cascade):
    assert "cuda:0" in [window.models_panel.device.itemText(i)
                        for i in range(window.models_panel.device.count())]
    window.models_panel.set_device("cuda:0")  # as a user picks it: the signal reaches the window
    assert window.service.device == "cuda:0" and window.settings.device() == "cuda:0"
    window.post_panel.set_score_threshold(0.2)
    window.set_model("cascade", *fast_cascade)
    assert window.open_path(crop_folder)
    qtbot.waitUntil(lambda: window.current_instances() is not None, timeout=MODEL_TIMEOUT)
    shown = window.current_instances()
    assert len(shown) > 0 and np.isfinite(shown.boxes).all()
    assert "cuda:0" in window.device_label.text()
    assert "cuda" in window.models_panel.device_label.text()
    assert window.service.info["cascade"].device == "cuda:0"  # the full device, not "cuda"
    assert not window.banner.isVisible()

    window.models_panel.fast.setChecked(True)
    path = window.source.entries[window.index].path
    key = window.service.key_for(path, "cascade", False)
    assert key.precision == "fast" and key.device == "cuda:0"
    qtbot.waitUntil(lambda: window.service.cached(key) is not None, timeout=MODEL_TIMEOUT)
    assert len(window.service.cached(key)) > 0
    assert "float16" in window.service.info["cascade"].precision_note
