"""emo.fuse.metrics agrees with hand-computed values and always reports every class."""

from __future__ import annotations

import numpy as np
import pytest

from emo.fuse.metrics import classification_metrics, majority_baseline, weighted_f1
from emo.labels import EMOTIONS


def test_metrics_match_hand_computation():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    m = classification_metrics(y_true, y_pred, EMOTIONS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 2/3 R 2/3 F1 2/3; class 1: P 1/2 R 1/2; class 2: 1
    assert m["per_class"]["neutral"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["joy"]["precision"] == pytest.approx(0.5)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1.0) / 6)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 7)  # absent classes count as 0
    assert set(m["per_class"]) == set(EMOTIONS)
    assert m["per_class"]["fear"]["support"] == 0
    assert np.array(m["confusion"]).shape == (7, 7)
    assert m["confusion"][0] == [2, 1, 0, 0, 0, 0, 0]
    assert weighted_f1(y_true, y_pred, 7) == pytest.approx(m["weighted_f1"])


def test_majority_baseline_predicts_the_train_majority():
    base = majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 1, 1]), EMOTIONS)
    assert base["accuracy"] == pytest.approx(0.75)
    assert base["per_class"]["neutral"]["recall"] == 0.0
