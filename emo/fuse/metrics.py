"""MELD's standard metrics, computed by scikit-learn so numbers match published code.

Weighted F1 is MELD's headline (classes are very unbalanced: neutral is ~47 %), macro F1
shows whether the rare classes (fear, disgust) are learned at all. Every class in the
label set is reported, including ones absent from a split, so tables line up across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="weighted", zero_division=0))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, weighted/macro F1, per-class precision/recall/F1/support, confusion matrix.

    The confusion matrix is rows = true class, columns = predicted, in `labels` order.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "labels": list(labels),
    }


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of always predicting the train split's most frequent class: the floor to beat."""
    majority = int(np.bincount(np.asarray(y_train), minlength=len(labels)).argmax())
    return classification_metrics(y_eval, np.full_like(np.asarray(y_eval), majority), labels)
