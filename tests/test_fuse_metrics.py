"""emo.fuse.metrics agrees with hand-computed values, always reports every class, and its
macro F1 averages the classes present in the evaluated labels (as the report says)."""

from __future__ import annotations

import numpy as np
import pytest

from emo.fuse.metrics import classification_metrics, macro_f1, majority_baseline, weighted_f1
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
    # macro F1 averages the 3 classes present in y_true; the 4 absent ones are left out, not counted as 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["macro_f1_classes"] == ["neutral", "joy", "surprise"]
    assert set(m["per_class"]) == set(EMOTIONS)  # every class still gets a row
    assert m["per_class"]["fear"]["support"] == 0
    assert np.array(m["confusion"]).shape == (7, 7)
    assert m["confusion"][0] == [2, 1, 0, 0, 0, 0, 0]
    assert weighted_f1(y_true, y_pred, 7) == pytest.approx(m["weighted_f1"])


def test_macro_f1_ignores_a_class_that_is_only_predicted():
    """A wrong guess of an absent class costs the classes it was taken from, but the absent
    class itself adds no 0 to the average."""
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 6, 1, 1])  # fear predicted once, never true
    # neutral: P 1, R 1/2 -> F1 2/3; joy: F1 1
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1.0) / 2)
    assert classification_metrics(y_true, y_pred, EMOTIONS)["macro_f1_classes"] == ["neutral", "joy"]


def test_every_class_present_gives_sklearns_plain_macro_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y_true = np.concatenate([np.arange(7), rng.integers(0, 7, 200)])
    y_pred = rng.integers(0, 7, len(y_true))
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_no_rows_score_zero_without_warnings():
    empty = np.array([], dtype=int)
    m = classification_metrics(empty, empty, EMOTIONS)
    assert m["macro_f1"] == 0.0 and m["accuracy"] == 0.0 and m["macro_f1_classes"] == []


def test_majority_baseline_predicts_the_train_majority():
    base = majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 1, 1]), EMOTIONS)
    assert base["accuracy"] == pytest.approx(0.75)
    assert base["per_class"]["neutral"]["recall"] == 0.0
