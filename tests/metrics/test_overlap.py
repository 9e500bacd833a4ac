"""Overlap metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics import confusion, dice, iou, overlap_scores, precision, recall, specificity

# pred: rows 0-1, cols 0-2 (6 px)     gt: rows 1-2, cols 1-2 (4 px)
#   1 1 1 0                              0 0 0 0
#   1 1 1 0                              0 1 1 0
#   0 0 0 0                              0 1 1 0
#   0 0 0 0                              0 0 0 0
# tp = row 1, cols 1-2 = 2; fp = 6 - 2 = 4; fn = 4 - 2 = 2; tn = 16 - 2 - 4 - 2 = 8
# dice = 2*2 / (2*2 + 4 + 2) = 0.4;  iou = 2 / (2 + 4 + 2) = 0.25
# precision = 2/6 = 1/3;  recall = 2/4 = 0.5;  specificity = 8 / (8 + 4) = 2/3
PRED = np.zeros((4, 4), dtype=bool)
PRED[0:2, 0:3] = True
GT = np.zeros((4, 4), dtype=bool)
GT[1:3, 1:3] = True


def test_confusion_hand_computed() -> None:
    assert confusion(PRED, GT) == (2, 4, 2, 8)
    # non-bool input: anything non-zero is foreground
    assert confusion(PRED.astype(np.uint8) * 255, GT.astype(np.int64)) == (2, 4, 2, 8)


def test_scores_hand_computed() -> None:
    assert dice(PRED, GT) == pytest.approx(0.4)
    assert iou(PRED, GT) == pytest.approx(0.25)
    assert precision(PRED, GT) == pytest.approx(1 / 3)
    assert recall(PRED, GT) == pytest.approx(0.5)
    assert specificity(PRED, GT) == pytest.approx(2 / 3)
    assert overlap_scores(2, 4, 2, 8) == pytest.approx(
        {"dice": 0.4, "iou": 0.25, "precision": 1 / 3, "recall": 0.5, "specificity": 2 / 3}
    )


def test_swapping_pred_and_gt_swaps_precision_and_recall() -> None:
    assert precision(GT, PRED) == pytest.approx(recall(PRED, GT))
    assert recall(GT, PRED) == pytest.approx(precision(PRED, GT))
    assert dice(GT, PRED) == pytest.approx(dice(PRED, GT))


def test_any_dimensionality() -> None:
    # 3D: two 2x2x2 cubes overlapping in a 1x2x2 slab -> tp 4, fp 4, fn 4, tn 64 - 12 = 52
    p = np.zeros((4, 4, 4), dtype=bool)
    g = np.zeros((4, 4, 4), dtype=bool)
    p[0:2, 0:2, 0:2] = True
    g[1:3, 0:2, 0:2] = True
    assert confusion(p, g) == (4, 4, 4, 52)
    assert dice(p, g) == pytest.approx(0.5)
    assert iou(p, g) == pytest.approx(1 / 3)
    # 1D
    assert confusion(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0])) == (1, 1, 1, 1)


def test_zero_denominators_follow_the_documented_rule() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    full = np.ones((3, 3), dtype=bool)
    some = empty.copy()
    some[1, 1] = True
    # both empty: every undefined ratio is 1 (identical masks); specificity = 9/9
    for f in (dice, iou, precision, recall, specificity):
        assert f(empty, empty) == 1.0
    # prediction empty, gt present: a miss scores 0; specificity 8/8 = 1
    assert (dice(empty, some), iou(empty, some), precision(empty, some), recall(empty, some)) == (0, 0, 0, 0)
    assert specificity(empty, some) == 1.0
    # gt empty, prediction present: recall undefined -> 0 (masks differ)
    assert (dice(some, empty), precision(some, empty), recall(some, empty)) == (0, 0, 0)
    assert specificity(some, empty) == pytest.approx(8 / 9)
    # gt covers everything: specificity undefined -> 1 if pred does too, else 0
    assert specificity(full, full) == 1.0
    assert specificity(some, full) == 0.0
    assert not any(
        np.isnan(f(a, b))
        for f in (dice, iou, precision, recall, specificity)
        for a in (empty, some, full)
        for b in (empty, some, full)
    )


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        confusion(np.zeros((2, 3)), np.zeros((3, 2)))
