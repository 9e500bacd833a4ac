"""Overlap metrics on binary masks: Dice, IoU, precision (PPV), recall (sensitivity), specificity.

All functions take two arrays of any dimensionality (2D images, 3D volumes, batches); anything
non-zero is foreground. They are computed from the confusion counts over all elements::

    tp = |P ∩ G|   fp = |P \\ G|   fn = |G \\ P|   tn = |¬P ∩ ¬G|

    dice        = 2 tp / (2 tp + fp + fn)
    iou         = tp / (tp + fp + fn)          (Jaccard)
    precision   = tp / (tp + fp)               (positive predictive value, PPV)
    recall      = tp / (tp + fn)               (sensitivity, true positive rate)
    specificity = tn / (tn + fp)               (true negative rate)

Zero denominators (one rule for every ratio, never NaN)
--------------------------------------------------------
A ratio is undefined (0/0) only when the masks give it nothing to measure:

* Dice / IoU  — both masks empty;
* precision   — prediction empty;
* recall      — ground truth empty;
* specificity — ground truth covers every element (no negatives).

An undefined ratio scores **1.0 when prediction and ground truth are identical** (e.g. both empty:
nothing to find and nothing found) and **0.0 otherwise** (e.g. precision of an empty prediction
against a non-empty ground truth: a missed object scores 0, as in PraNet's evaluation code).

These are the *binary* definitions. The per-class case policies of the papers (TransUNet's
``calculate_metric_percase``, where a missed organ scores Dice 0, and a "strict" mode) live in
:mod:`medseg.metrics.aggregate`, which overrides Dice/IoU for empty masks as its mode says.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "confusion",
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "overlap_scores",
]


def _as_bool(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype == np.bool_ else x != 0


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """Return ``(tp, fp, fn, tn)`` of two masks of equal shape (non-zero = foreground)."""
    p = _as_bool(pred)
    g = _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    tp = int(np.count_nonzero(p & g))
    fp = n_p - tp
    fn = n_g - tp
    tn = int(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: float, den: float, identical: bool) -> float:
    """num/den, or the documented value of an undefined ratio (1.0 if the masks agree, else 0.0)."""
    if den == 0:
        return 1.0 if identical else 0.0
    return float(num) / float(den)


def overlap_scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """All overlap metrics from confusion counts, with the module's zero-denominator rule."""
    identical = fp == 0 and fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, identical),
        "iou": _ratio(tp, tp + fp + fn, identical),
        "precision": _ratio(tp, tp + fp, identical),
        "recall": _ratio(tp, tp + fn, identical),
        "specificity": _ratio(tn, tn + fp, identical),
    }


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P|+|G|); 1.0 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(2 * tp, 2 * tp + fp + fn, fp == 0 and fn == 0)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU (Jaccard) = |P∩G| / |P∪G|; 1.0 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fp + fn, fp == 0 and fn == 0)


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """Precision (PPV) = tp/(tp+fp); empty prediction → 1.0 if gt is empty too, else 0.0."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fp, fp == 0 and fn == 0)


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    """Recall (sensitivity) = tp/(tp+fn); empty gt → 1.0 if pred is empty too, else 0.0."""
    tp, fp, fn, _ = confusion(pred, gt)
    return _ratio(tp, tp + fn, fp == 0 and fn == 0)


def specificity(pred: np.ndarray, gt: np.ndarray) -> float:
    """Specificity = tn/(tn+fp); gt covering everything → 1.0 if pred does too, else 0.0."""
    tp, fp, fn, tn = confusion(pred, gt)
    return _ratio(tn, tn + fp, fp == 0 and fn == 0)
