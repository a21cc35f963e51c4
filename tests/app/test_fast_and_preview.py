"""The window with TTA shows the plain prediction first, then TTA's; fast precision is a
persisted Models-panel toggle that is part of the raw-output cache key (real fixture model)."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.core.postprocess.pipeline import compose

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 180_000  # ms: CPU model runs on a shared machine


def same(a, b) -> bool:
    return (len(a) == len(b) and np.allclose(a.boxes, b.boxes)
            and np.array_equal(a.scores, b.scores) and np.array_equal(a.classes, b.classes))


def raw_of(window, model: str, tta: bool):
    path = window.source.entries[window.index].path
    return window.service.cached(window.service.key_for(path, model, tta))


def test_tta_shows_the_plain_prediction_first_then_replaces_it(window, qtbot, crop_folder,
                                                               fast_cascade):
    from cellseg.app.results import PLAIN_WHILE_TTA, TTA_SHOWN

    shown = []  # (status label, instances) each time the canvas gets new instances
    window.instances_changed.connect(
        lambda inst: shown.append((window.result_label.text(), inst)))
    window.post_panel.set_score_threshold(0.2)
    window.post_panel.tta.setChecked(True)
    window.set_model("cascade", *fast_cascade)
    assert window.open_path(crop_folder)
    qtbot.waitUntil(lambda: any(label == TTA_SHOWN for label, _ in shown), timeout=MODEL_TIMEOUT)
    results = [(label, inst) for label, inst in shown if inst is not None]
    assert [label for label, _ in results] == [PLAIN_WHILE_TTA, TTA_SHOWN]
    plain, tta = results[0][1], results[1][1]
    values = window.post_panel.settings().pipeline()
    assert same(plain, compose({"cascade": raw_of(window, "cascade", False)}, values))
    assert same(tta, compose({"cascade": raw_of(window, "cascade", True)}, values))
    assert not same(plain, tta)
    assert window.current_instances() is tta
    assert window.result_label.text() == TTA_SHOWN

    # TTA off: the plain result comes from the cache, and the label says nothing special
    window.post_panel.tta.setChecked(False)
    qtbot.waitUntil(lambda: window.current_instances() is not tta
                    and same(window.current_instances(), plain), timeout=30_000)
    assert window.result_label.text() == ""


def test_fast_precision_toggle_is_a_cache_key_and_persisted(window, qtbot, crop_folder,
                                                            fast_cascade, settings):
    window.set_model("cascade", *fast_cascade)
    assert window.open_path(crop_folder)
    assert not window.models_panel.fast.isChecked()  # exact by default
    qtbot.waitUntil(lambda: raw_of(window, "cascade", False) is not None, timeout=MODEL_TIMEOUT)
    exact = raw_of(window, "cascade", False)
    window.models_panel.fast.setChecked(True)
    assert window.service.precision == "fast" and settings.precision() == "fast"
    qtbot.waitUntil(lambda: raw_of(window, "cascade", False) is not None, timeout=MODEL_TIMEOUT)
    fast = raw_of(window, "cascade", False)
    assert fast is not exact and len(fast) > 0
    path = window.source.entries[window.index].path
    key = window.service.key_for(path, "cascade", False)
    assert key.precision == "fast"
    assert window.service.cached(key.__class__(**{**key.__dict__, "precision": "exact"})) is exact

    from cellseg.app.window import MainWindow

    again = MainWindow(settings)  # a new session reads the setting back
    qtbot.addWidget(again)
    assert again.models_panel.fast.isChecked() and again.service.precision == "fast"
    again.close()
