"""Polyp (binary, 2D) evaluation: the PraNet protocol plus Dice/IoU at a fixed threshold.

Inputs per image: a **probability map** ``prob`` (float in [0, 1]; uint8 maps are divided by 255)
— not a thresholded mask, since the threshold sweeps and the structure measures need the soft
map — and a ground truth ``gt`` binarised as follows: bool as is; float ``> 0.5``; integer
``> 128`` (0/255 PNG masks, as PraNet's ``gt > 128``) unless its maximum is 1, then ``> 0``
(0/1 label maps as our data readers produce).

Per image:

* ``dice``, ``iou`` — at ``prob >= threshold`` (0.5 by default), with the zero-denominator rule
  of :mod:`.overlap` (both empty → 1).
* PraNet's threshold sweep (``eval/main.m`` + ``Fmeasure_calu.m``): thresholds
  ``1, 254/255, ..., 1/255, 0`` (256 values, MATLAB's ``1:-1/255:0``, stored as ``k/255``); at each,
  the mask ``prob >= t`` gives Dice and IoU, **0 when the intersection is empty** (MATLAB's
  ``NumAnd == 0`` branch, also when the gt is empty). Per image: ``meanDic``/``meanIoU`` (mean over
  thresholds) and ``maxDic``/``maxIoU``.
* ``Sm`` — S-measure, α = 0.5; ``wFm`` — weighted F-measure (β = 1, ``original_WFb``);
  ``meanEm``/``maxEm`` — mean/max over the 256-threshold E-measure curve; ``adpEm`` — E-measure at
  the adaptive threshold ``2·mean(prob)``; ``MAE`` — mean |prob − gt|. These come from
  ``py_sod_metrics`` (``Smeasure``, ``WeightedFmeasure``, ``Emeasure``, ``MAE``) with
  ``normalize=False``.
* ``softDice`` — MSNet/M2SNet's own ``utils/metric.py`` ``cal_dice`` (NOTES §2): a *soft* Dice on the
  probability map itself, no threshold, ``(2 Σ p·g + 1e-5) / (Σ g + Σ p + 1e-5)`` with ``g`` the
  binarised ground truth; per image, mean over images. It is the "Dice" MSNet's ``test_score.py``
  prints (on the min-max normalised map, as evaluation passes it).

Dataset values (:meth:`PolypEvaluator.results`), as PraNet computes them: the Dice/IoU/E-measure
curves are first **averaged over images per threshold**, then ``meanDic``/``meanIoU``/``meanEm``
are the mean over thresholds and ``maxDic``/``maxIoU``/``maxEm`` the maximum over thresholds of
that mean curve (so ``maxDic`` is *not* the mean of per-image maxima). All other values, ``dice``
and ``iou`` included, are means over images.

Min-max normalisation. ``minmax=True`` rescales each map to [0, 1] per image before **every**
metric (the fixed-threshold ``dice``/``iou`` included); constant maps are left unchanged (MSNet's
``utils/metric.py`` divides a constant 8-bit map by 255, i.e. the same probability). This is what
the published numbers were computed on (NOTES §2, §5.3): PraNet's ``MyTest.py`` saves
``sigmoid`` maps already min-max normalised; MSNet/M2SNet's ``prediction_rgb.py`` saves the plain
sigmoid map as an 8-bit PNG and its ``metric.py`` min-max normalises each map it reads. A
consequence: a map whose peak is low (say 0.1) is stretched to a peak of 1, so ``dice`` at 0.5 then
counts its brightest pixels as foreground. The protocols also evaluate 8-bit PNGs (quantised to
``k/255``); we score the float maps. :func:`medseg.engine.evaluate.evaluate_split` always passes
``minmax=True``; this class defaults to ``False`` (the given probabilities as they are).

Table (:func:`polyp_markdown`, :data:`POLYP_COLUMNS`), in the M2SNet/MSNet papers' column order
(mDice, mIoU, Fwβ, Sα, Eφ^max, MAE, as listed in M2SNet §4.2), each pair of variants side by side:
``mDice@0.5 | mIoU@0.5 | mDice PraNet | mIoU PraNet | Fwβ | Sα | mEφ | maxEφ | MAE``, where ``@0.5``
are ``dice``/``iou`` (per image at threshold 0.5, mean over images) and ``PraNet`` are
``meanDic``/``meanIoU`` (mean over the 256 thresholds). The papers' Eφ column is ``maxEφ``.
MSNet's own ``metric.py`` reports a *soft* Dice (no threshold) and IoU at 0.5 (NOTES §2), so its
Dice matches neither of those Dice columns: it is the last, separately labelled column
``mDice soft (MSNet metric.py)`` (``softDice``), not a column of the papers' PraNet-protocol tables.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.utils import atomic_write_text

from .overlap import overlap_scores

__all__ = ["POLYP_COLUMNS", "PRANET_THRESHOLDS", "PolypEvaluator", "polyp_markdown", "binarize_gt", "soft_dice"]

logger = logging.getLogger(__name__)

#: PraNet's thresholds ``1:-1/255:0`` in its (descending) order, as exact ``k/255``.
PRANET_THRESHOLDS = np.arange(255, -1, -1, dtype=np.float64) / 255.0
_ASCENDING = PRANET_THRESHOLDS[::-1].copy()

_SCALARS = (
    "dice",
    "iou",
    "meanDic",
    "meanIoU",
    "maxDic",
    "maxIoU",
    "Sm",
    "wFm",
    "meanEm",
    "maxEm",
    "adpEm",
    "MAE",
    "softDice",
)

#: ``cal_dice`` smoothing of MSNet's ``utils/metric.py``.
SOFT_DICE_SMOOTH = 1e-5


def soft_dice(prob: np.ndarray, gt: np.ndarray, smooth: float = SOFT_DICE_SMOOTH) -> float:
    """MSNet's ``metric.py`` Dice: ``(2 Σ p·g + smooth) / (Σ g + Σ p + smooth)`` on the soft map ``p``."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    g = np.asarray(gt, dtype=np.float64).ravel()
    return float((2.0 * np.sum(p * g) + smooth) / (np.sum(g) + np.sum(p) + smooth))


def binarize_gt(gt: np.ndarray) -> np.ndarray:
    """Ground truth to bool: bool as is; float ``> 0.5``; integer ``> 128`` (or ``> 0`` if max ≤ 1)."""
    g = np.asarray(gt)
    if g.ndim == 3 and g.shape[-1] in (3, 4):
        g = g[..., 0]
    if g.dtype == np.bool_:
        return g
    if np.issubdtype(g.dtype, np.floating):
        return g > 0.5
    if g.size and g.max() <= 1:
        return g > 0
    return g > 128


def _prepare_prob(prob: np.ndarray, minmax: bool) -> np.ndarray:
    p = np.asarray(prob)
    if p.dtype == np.uint8:
        p = p.astype(np.float64) / 255.0
    elif np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    else:
        raise TypeError(f"prob must be a float probability map in [0, 1] (or uint8 0..255), got {p.dtype}")
    if p.size == 0 or not np.all(np.isfinite(p)):
        raise ValueError("prob must be non-empty and finite")
    lo, hi = float(p.min()), float(p.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"prob must lie in [0, 1] (probabilities, not logits), got range [{lo}, {hi}]")
    p = np.clip(p, 0.0, 1.0)
    if minmax and hi > lo:
        p = (p - lo) / (hi - lo)
    return p


def threshold_curves(prob: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of ``prob >= t`` for t in :data:`PRANET_THRESHOLDS` (0 where tp = 0)."""
    # idx = number of thresholds <= p, so the pixel is positive at ascending threshold j iff j < idx.
    idx = np.searchsorted(_ASCENDING, prob.ravel(), side="right")
    g = gt.ravel()
    fg = np.bincount(idx[g], minlength=257)
    allp = np.bincount(idx, minlength=257)
    tp = np.cumsum(fg[::-1])[::-1][1:].astype(np.float64)  # ascending thresholds
    n_pred = np.cumsum(allp[::-1])[::-1][1:].astype(np.float64)
    n_gt = float(np.count_nonzero(g))
    tp, n_pred = tp[::-1], n_pred[::-1]  # PraNet order: threshold 1 first
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(tp > 0, 2 * tp / (n_gt + n_pred), 0.0)
        iou = np.where(tp > 0, tp / (n_gt + n_pred - tp), 0.0)
    return dice, iou


class PolypEvaluator:
    """Accumulate polyp predictions image by image; see the module docstring for definitions.

    Args:
        threshold: threshold of the fixed-threshold ``dice``/``iou`` (``prob >= threshold``).
        minmax: min-max normalise each probability map before every metric (see "Min-max normalisation").
    """

    def __init__(self, threshold: float = 0.5, minmax: bool = False) -> None:
        import py_sod_metrics as sod  # lazy: only needed for polyp evaluation

        self.threshold = float(threshold)
        self.minmax = bool(minmax)
        self._sm = sod.Smeasure(alpha=0.5)
        self._em = sod.Emeasure()
        self._wfm = sod.WeightedFmeasure(beta=1)
        self._mae = sod.MAE()
        self._rows: list[dict[str, Any]] = []
        self._dice_curves: list[np.ndarray] = []
        self._iou_curves: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, name: str, prob: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
        """Score one image (``prob`` [H, W] in [0, 1], ``gt`` [H, W]); returns its row."""
        p = np.squeeze(_prepare_prob(prob, self.minmax))
        g = np.squeeze(binarize_gt(gt))
        if p.ndim != 2 or p.shape != g.shape:
            raise ValueError(
                f"prob and gt must be 2D of equal shape, got {np.shape(prob)} and {np.shape(gt)}"
            )

        b = p >= self.threshold
        tp = int(np.count_nonzero(b & g))
        n_p, n_g = int(np.count_nonzero(b)), int(np.count_nonzero(g))
        fixed = overlap_scores(tp, n_p - tp, n_g - tp, p.size - n_p - n_g + tp)
        dice_c, iou_c = threshold_curves(p, g)

        self._sm.step(p, g, normalize=False)
        self._em.step(p, g, normalize=False)
        self._wfm.step(p, g, normalize=False)
        self._mae.step(p, g, normalize=False)
        em_curve = np.asarray(self._em.changeable_ems[-1], dtype=np.float64)

        row = {
            "name": name,
            "dice": fixed["dice"],
            "iou": fixed["iou"],
            "meanDic": float(dice_c.mean()),
            "meanIoU": float(iou_c.mean()),
            "maxDic": float(dice_c.max()),
            "maxIoU": float(iou_c.max()),
            "Sm": float(self._sm.sms[-1]),
            "wFm": float(self._wfm.weighted_fms[-1]),
            "meanEm": float(em_curve.mean()),
            "maxEm": float(em_curve.max()),
            "adpEm": float(self._em.adaptive_ems[-1]),
            "MAE": float(self._mae.maes[-1]),
            "softDice": soft_dice(p, g),
            "gt_empty": n_g == 0,
        }
        self._rows.append(row)
        self._dice_curves.append(dice_c)
        self._iou_curves.append(iou_c)
        return row

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset curves over :data:`PRANET_THRESHOLDS` (mean over images per threshold)."""
        if not self._rows:
            raise ValueError("no image was added")
        em = np.mean(np.asarray(self._em.changeable_ems, dtype=np.float64), axis=0)
        return {
            "thresholds": PRANET_THRESHOLDS.copy(),
            "dice": np.mean(self._dice_curves, axis=0),
            "iou": np.mean(self._iou_curves, axis=0),
            # py_sod_metrics bins (prob*255) to uint8 and orders its curve from threshold 255 down.
            "em": em,
        }

    def results(self) -> dict[str, Any]:
        """Dataset values (floats) plus ``n_images``, ``threshold`` and ``minmax``."""
        c = self.curves()
        mean = {
            k: float(np.mean([r[k] for r in self._rows]))
            for k in ("dice", "iou", "Sm", "wFm", "adpEm", "MAE", "softDice")
        }
        n_empty = sum(r["gt_empty"] for r in self._rows)
        if n_empty:
            logger.warning("%d of %d polyp ground truths are empty", n_empty, len(self._rows))
        return {
            "n_images": len(self._rows),
            "threshold": self.threshold,
            "minmax": self.minmax,
            "dice": mean["dice"],
            "iou": mean["iou"],
            "meanDic": float(c["dice"].mean()),
            "meanIoU": float(c["iou"].mean()),
            "maxDic": float(c["dice"].max()),
            "maxIoU": float(c["iou"].max()),
            "Sm": mean["Sm"],
            "wFm": mean["wFm"],
            "meanEm": float(c["em"].mean()),
            "maxEm": float(c["em"].max()),
            "adpEm": mean["adpEm"],
            "MAE": mean["MAE"],
            "softDice": mean["softDice"],
        }

    def per_image(self) -> list[dict[str, Any]]:
        """One dict per image (copies), in insertion order."""
        return [dict(r) for r in self._rows]

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Per-image rows to CSV (written atomically)."""
        cols = ["name", *_SCALARS, "gt_empty"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self._rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
        return atomic_write_text(path, buf.getvalue())


#: Columns of the polyp table, (header, results key), in the papers' order (see the module docstring).
POLYP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mDice@0.5", "dice"),
    ("mIoU@0.5", "iou"),
    ("mDice PraNet", "meanDic"),
    ("mIoU PraNet", "meanIoU"),
    ("Fwβ", "wFm"),
    ("Sα", "Sm"),
    ("mEφ", "meanEm"),
    ("maxEφ", "maxEm"),
    ("MAE", "MAE"),
    ("mDice soft (MSNet metric.py)", "softDice"),  # extra column: MSNet's own Dice, not the papers' tables
)


def polyp_markdown(
    results_by_set: Mapping[str, Mapping[str, Any]],
    digits: int = 3,
    columns: Sequence[tuple[str, str]] = POLYP_COLUMNS,
) -> str:
    """Markdown table, one row per test set (``Dataset`` then :data:`POLYP_COLUMNS`).

    ``results_by_set`` maps a set name to its :meth:`PolypEvaluator.results`; rows keep its order.
    A missing or non-finite value shows as ``–``. Pass ``columns`` (header, key) pairs to show other keys.
    """
    header = ["Dataset", *(h for h, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for name, res in results_by_set.items():
        cells = [str(name)]
        for _, key in columns:
            v = res.get(key)
            cells.append("–" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
