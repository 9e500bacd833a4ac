"""Segmentation metrics (numpy/scipy only).

* :mod:`.overlap` — Dice, IoU, precision (PPV), recall (sensitivity), specificity on binary masks.
* :mod:`.distance` — our surface distances: HD95 (``"medpy"`` pooled / ``"monai"`` directed-max),
  HD, ASD (directed), ASSD, with spacing in array axis order.
* :mod:`.aggregate` — per-case, per-class evaluation with the ``paper`` (TransUNet) or ``strict``
  empty-mask policy, and :class:`MetricTable` (CSV / JSON / Markdown).
* :mod:`.polyp` — the PraNet polyp protocol (meanDic, Sα, Eφ, Fwβ, MAE via ``py_sod_metrics``).

Each module's docstring states its definitions and empty-mask policy.
"""

from .aggregate import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    MODE_POLICIES,
    MODES,
    OVERLAP_METRICS,
    MetricTable,
    class_group_means,
    confusion_counts,
    evaluate_case,
    pooled_summary,
)
from .distance import HD95_METHODS, asd, assd, distances_from_sets, hd, hd95, surface_distances
from .overlap import confusion, dice, iou, overlap_scores, precision, recall, specificity
from .polyp import PRANET_THRESHOLDS, PolypEvaluator, binarize_gt, polyp_markdown

__all__ = [
    "confusion",
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "overlap_scores",
    "surface_distances",
    "distances_from_sets",
    "hd95",
    "hd",
    "asd",
    "assd",
    "HD95_METHODS",
    "evaluate_case",
    "confusion_counts",
    "pooled_summary",
    "class_group_means",
    "MetricTable",
    "MODES",
    "MODE_POLICIES",
    "OVERLAP_METRICS",
    "DISTANCE_METRICS",
    "DEFAULT_METRICS",
    "PolypEvaluator",
    "polyp_markdown",
    "binarize_gt",
    "PRANET_THRESHOLDS",
]
