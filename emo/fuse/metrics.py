"""MELD's standard metrics, computed by scikit-learn so numbers match published code.

What each number means, exactly (the eval report repeats this to its reader):

- weighted F1, MELD's headline: the mean of the per-class F1 scores weighted by each
  class's support in the evaluated labels. Classes are very unbalanced (neutral is ~47 %),
  so this mostly follows the frequent classes.
- macro F1: the unweighted mean of the per-class F1 over the classes **present in the
  evaluated labels**, so it shows whether the rare classes (fear, disgust) are learned at
  all. A class absent from the split has no recall to measure; counting it as 0 would
  lower the score for a reason the model has nothing to do with, so it is left out (and
  `macro_f1_classes` says which classes were counted).
- accuracy: the share of rows predicted correctly.

All values are fractions in [0, 1]; people see them as percent. Every class of the label
set still gets a row in `per_class` and the confusion matrix (support 0 when absent), so
tables line up across runs and splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Support-weighted mean per-class F1 (classes absent from `y_true` weigh 0; 0.0 for no rows)."""
    from sklearn.metrics import f1_score

    if not len(y_true):
        return 0.0
    return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="weighted", zero_division=0))


def present_classes(y_true: np.ndarray) -> list[int]:
    """The class ids that occur in the evaluated labels: the classes macro F1 averages over."""
    return sorted(int(c) for c in np.unique(np.asarray(y_true)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean per-class F1 over the classes present in `y_true` (0.0 for no rows)."""
    from sklearn.metrics import f1_score

    present = present_classes(y_true)
    if not present:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, weighted/macro F1, per-class precision/recall/F1/support, confusion matrix.

    The confusion matrix is rows = true class, columns = predicted, in `labels` order.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    ids = list(range(len(labels)))
    if len(y_true):
        precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
        confusion = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    else:  # an empty split scores 0 everywhere instead of failing inside scikit-learn
        precision = recall = f1 = support = np.zeros(len(ids))
        confusion = [[0] * len(ids) for _ in ids]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "weighted_f1": weighted_f1(y_true, y_pred, len(labels)),
        "macro_f1": macro_f1(y_true, y_pred),
        "macro_f1_classes": [labels[i] for i in present_classes(y_true)],
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion": confusion,
        "labels": list(labels),
    }


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of always predicting the train split's most frequent class: the floor to beat."""
    majority = int(np.bincount(np.asarray(y_train), minlength=len(labels)).argmax())
    return classification_metrics(y_eval, np.full_like(np.asarray(y_eval), majority), labels)
