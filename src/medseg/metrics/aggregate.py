"""Per-case, per-class evaluation of label maps and the tables the papers report.

:func:`evaluate_case` scores one case (a 2D image or a 3D volume, evaluated as a whole: the
Synapse/ACDC protocol evaluates the reassembled 3D volume) for every foreground class
``c = 1 .. num_classes-1`` (binary tasks: ``num_classes=2``, class 1), one row per class::

    {"class": c, "dice": ..., "iou": ..., "hd95": ..., "asd": ..., "precision": ...,
     "recall": ..., "specificity": ..., "gt_empty": bool, "pred_empty": bool}

``label_groups`` ({name: labels}) adds one row per group after the classes: the binary masks
"label in labels" scored like a class (MDA-U-Net's foreground organ ∪ tumour), with ``"class"``
``num_classes + i`` (group ``i``, in order) and ``"group": name``. Group rows are listed in every
table but left out of the ``average`` (the average stays the papers' mean over labels).

Available metrics: ``dice, iou, precision, recall, specificity`` (see :mod:`.overlap`) and
``hd95, hd, asd, assd`` (see :mod:`.distance`; ``asd`` is directed pred→gt as in medpy, ``assd``
the symmetric one — CASCADE/MGRAD-UNet's "ASD" column is medpy ``assd``). Distances are in voxels
unless ``spacing`` (array axis order) is given; HD95 is medpy's pooled definition unless
``hd_method="monai"``.

Empty-mask policies (``mode``)
------------------------------
``paper`` — TransUNet's ``calculate_metric_percase`` exactly (also CASCADE, MGRAD-UNet):

==========================  ==========  ==========  =====================================
case                        Dice / IoU  distances   note
==========================  ==========  ==========  =====================================
pred and gt non-empty       computed    computed    medpy definitions
pred non-empty, gt empty    1 / 1       0           "predicted an absent organ" scores 1!
pred empty (gt any)         0 / 0       0           a missed organ gets HD95 0 (flatters HD)
==========================  ==========  ==========  =====================================

``strict`` — no made-up distances:

==========================  ==========  ====================================================
case                        Dice / IoU  distances
==========================  ==========  ====================================================
pred and gt non-empty       computed    computed
both empty                  1 / 1       NaN: excluded from the means
exactly one empty           0 / 0       NaN: excluded from the means **and counted**
==========================  ==========  ====================================================

In both modes precision, recall and specificity come from the confusion counts with the rule of
:mod:`.overlap` (an undefined 0/0 ratio is 1.0 if the two masks are identical, else 0.0). So in
``paper`` mode a spurious prediction of an absent organ has Dice 1 but precision 0.

:class:`MetricTable` collects rows of many cases and writes them (CSV per case and class, JSON
summary, Markdown table). Means skip NaN values; the summary records, per class and metric, how
many values were excluded, plus the mode and HD95 method, next to the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medseg.utils import atomic_write_text, json_safe

from .distance import (
    HD95_METHODS,
    _normalize_spacing,
    border_maps,
    distances_from_sets,
    foreground_box,
    label_distances,
)
from .overlap import overlap_scores

__all__ = [
    "MODES",
    "OVERLAP_METRICS",
    "DISTANCE_METRICS",
    "DEFAULT_METRICS",
    "MODE_POLICIES",
    "evaluate_case",
    "confusion_counts",
    "pooled_summary",
    "class_group_means",
    "MetricTable",
]

logger = logging.getLogger(__name__)

MODES = ("paper", "strict")
OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "specificity")
DISTANCE_METRICS = ("hd95", "hd", "asd", "assd")
# "asd" is directed (pred -> gt, medpy's asd); "assd" symmetric (medpy's assd): the "ASD" column of
# CASCADE / MGRAD-UNet's ACDC tables is medpy's assd (NOTES §5.1), so both are reported.
DEFAULT_METRICS = ("dice", "iou", "hd95", "asd", "assd", "precision", "recall", "specificity")
#: Human-readable empty-mask policy of each mode, recorded in every summary.
MODE_POLICIES = {
    "paper": (
        "TransUNet calculate_metric_percase: pred&gt non-empty -> computed; pred non-empty & gt empty "
        "-> Dice/IoU 1, distances 0; pred empty -> Dice/IoU 0, distances 0"
    ),
    "strict": (
        "both empty -> Dice/IoU 1, distances NaN (excluded); one empty -> Dice/IoU 0, distances NaN "
        "(excluded, counted)"
    ),
}
_PERCENT_METRICS = set(OVERLAP_METRICS)
_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "hd95": "HD95",
    "hd": "HD",
    "asd": "ASD",
    "assd": "ASSD",
}


def _as_labels(x: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    elif not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
        a = a.astype(np.int64)
    if a.size and (int(a.min()) < 0 or int(a.max()) >= num_classes):
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got range [{int(a.min())}, {int(a.max())}] (binary masks in 0/255? divide by 255)"
        )
    return a


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    mode: Literal["paper", "strict"] = "paper",
    hd_method: Literal["medpy", "monai"] = "medpy",
    metrics: Sequence[str] = DEFAULT_METRICS,
    label_groups: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Score every foreground class of one case; returns one row per class ``1..num_classes-1``,
    then one per label group.

    Args:
        pred, gt: integer label maps of equal shape (2D image or 3D volume; bool for binary).
        num_classes: number of classes including background (binary task: 2).
        spacing: voxel size in array axis order, or ``None`` for distances in voxels.
        mode: ``"paper"`` (TransUNet rules) or ``"strict"``; see the module docstring.
        hd_method: ``"medpy"`` (pooled 95th percentile) or ``"monai"`` (max of directed ones).
        metrics: names among ``dice, iou, precision, recall, specificity, hd95, hd, asd, assd``.
        label_groups: ``{name: labels}``, each scored as the binary class "label in labels"
            (row ``"class": num_classes + i``, ``"group": name``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {MODES}")
    if hd_method not in HD95_METHODS:
        raise ValueError(f"unknown HD95 method {hd_method!r}; valid: {HD95_METHODS}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    unknown = [m for m in metrics if m not in OVERLAP_METRICS + DISTANCE_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; valid: {OVERLAP_METRICS + DISTANCE_METRICS}")
    p_lab = _as_labels(pred, num_classes, "pred")
    g_lab = _as_labels(gt, num_classes, "gt")
    if p_lab.shape != g_lab.shape:
        raise ValueError(f"pred and gt shapes differ: {p_lab.shape} vs {g_lab.shape}")
    sp = _normalize_spacing(spacing, p_lab.ndim)
    dist_names = [m for m in metrics if m in DISTANCE_METRICS]
    total = int(p_lab.size)

    # One confusion matrix gives every class's counts; one border pass per label map gives every
    # class's surface (only when a distance is asked for and some class needs one).
    # Outside the box of the voxels labelled in either map both are background: the counts there are
    # all (0, 0), and the borders and distances are those of the box (see distance.foreground_box).
    k = num_classes
    box = foreground_box(p_lab, g_lab)
    if box is None:
        box = tuple(slice(0, 0) for _ in p_lab.shape)
    p_box, g_box = p_lab[box], g_lab[box]
    if k <= 16:  # pred * k + gt fits one byte
        p_box, g_box = p_box.astype(np.uint8, copy=False), g_box.astype(np.uint8, copy=False)
        code = np.multiply(p_box, np.uint8(k)) + g_box
    else:
        code = p_box.astype(np.int64) * k + g_box
    code = code.ravel()
    labelled = np.flatnonzero(code != 0)  # (0, 0) voxels are counted by difference: most of a volume
    cm = np.bincount(code[labelled], minlength=k * k).reshape(k, k)
    cm[0, 0] += total - labelled.size
    borders = None

    rows: list[dict[str, Any]] = []
    for c in range(1, num_classes):
        tp = int(cm[c, c])
        n_p = int(cm[c].sum())
        n_g = int(cm[:, c].sum())
        fp, fn = n_p - tp, n_g - tp
        tn = total - tp - fp - fn
        pred_empty, gt_empty = n_p == 0, n_g == 0
        scores = overlap_scores(tp, fp, fn, tn)

        if not pred_empty and not gt_empty:
            if dist_names and borders is None:
                borders = border_maps(p_box, g_box, k, sp)
            dists = (
                distances_from_sets(*label_distances(borders, c),
                                    hd_method=hd_method, metrics=dist_names)
                if dist_names else {}
            )
        elif mode == "paper":
            fill = 1.0 if gt_empty and not pred_empty else 0.0
            scores["dice"] = scores["iou"] = fill
            dists = dict.fromkeys(dist_names, 0.0)
        else:  # strict
            fill = 1.0 if pred_empty and gt_empty else 0.0
            scores["dice"] = scores["iou"] = fill
            dists = dict.fromkeys(dist_names, math.nan)

        row: dict[str, Any] = {"class": c}
        for m in metrics:
            row[m] = dists[m] if m in DISTANCE_METRICS else scores[m]
        row["gt_empty"] = gt_empty
        row["pred_empty"] = pred_empty
        rows.append(row)
    for i, (name, labels) in enumerate((label_groups or {}).items()):
        rows.append(_group_row(p_lab, g_lab, num_classes, i, name, labels, spacing=sp, mode=mode,
                               hd_method=hd_method, metrics=metrics))
    return rows


def _group_row(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    index: int,
    name: str,
    labels: Sequence[int],
    **kwargs: Any,
) -> dict[str, Any]:
    """The row of label group ``index``: the union of ``labels`` scored as a binary class."""
    bad = [lab for lab in labels if not 1 <= int(lab) < num_classes]
    if not labels or bad:
        raise ValueError(
            f"label group {name!r}: labels {list(labels)} must be foreground labels in 1..{num_classes - 1}"
        )
    keep = np.asarray(list(labels))
    row = evaluate_case(np.isin(pred, keep), np.isin(gt, keep), 2, **kwargs)[0]
    return {"class": num_classes + index, "group": str(name), **{k: v for k, v in row.items() if k != "class"}}


def confusion_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    label_groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[int, np.ndarray]:
    """``{class: [tp, fp, fn, tn]}`` pixel counts of one case (int64), label groups numbered as in
    :func:`evaluate_case` (``num_classes + i``). Summed over a split they give :func:`pooled_summary`."""
    p = _as_labels(pred, num_classes, "pred").astype(np.int64).ravel()
    g = _as_labels(gt, num_classes, "gt").astype(np.int64).ravel()
    cm = np.bincount(p * num_classes + g, minlength=num_classes**2).reshape(num_classes, num_classes)
    total = int(p.size)
    out: dict[int, np.ndarray] = {}
    masks = [(c, [c]) for c in range(1, num_classes)]
    masks += [(num_classes + i, list(labels)) for i, labels in enumerate((label_groups or {}).values())]
    for c, labels in masks:
        tp = int(cm[np.ix_(labels, labels)].sum())
        n_p, n_g = int(cm[labels].sum()), int(cm[:, labels].sum())
        out[c] = np.array([tp, n_p - tp, n_g - tp, total - n_p - n_g + tp], dtype=np.int64)
    return out


def pooled_summary(counts: Mapping[int, np.ndarray], names: Mapping[int, str], groups: Sequence[int] = ()) -> dict[str, Any]:
    """Overlap metrics from counts summed over every pixel of a split ("pixel-wise", MDA-U-Net Eq. 15).

    ``counts``: ``{class: [tp, fp, fn, tn]}`` summed over the cases (:func:`confusion_counts`);
    ``groups``: class ids that are label groups (listed, left out of ``average``). Returns
    ``{"classes": {str(c): {"name", "tp", "fp", "fn", "tn", m: {"mean": v}}}, "average": {m: {"mean"}}}``
    for ``m`` in :data:`OVERLAP_METRICS` -- the same shape as :meth:`MetricTable.summary` (no std: one
    value per class); distances have no pooled form.
    """
    classes: dict[str, Any] = {}
    for c in sorted(counts):
        tp, fp, fn, tn = (int(x) for x in counts[c])
        entry: dict[str, Any] = {"name": names.get(c, f"class {c}"), "tp": tp, "fp": fp, "fn": fn, "tn": tn}
        entry.update({m: {"mean": v} for m, v in overlap_scores(tp, fp, fn, tn).items()})
        if c in groups:
            entry["group"] = True
        classes[str(c)] = entry
    labels = [e for c, e in classes.items() if int(c) not in groups]
    average = {m: {"mean": float(np.mean([e[m]["mean"] for e in labels])) if labels else math.nan}
               for m in OVERLAP_METRICS}
    return {"classes": classes, "average": average}


def class_group_means(classes: Mapping[str, Any], groups: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Each class group's mean of its classes' scores (SNet Tables 5-6: Tissue / Small / Large).

    ``classes``: the ``classes`` of :meth:`MetricTable.summary` or :func:`pooled_summary`. Returns
    ``{name: {"labels": [...], m: {"mean": mean over the labels of the class means}}}`` for every
    metric the classes have (NaN class means are skipped).
    """
    out: dict[str, Any] = {}
    for name, labels in groups.items():
        entries = [classes[str(c)] for c in labels if str(c) in classes]
        metrics = [m for m, v in (entries[0].items() if entries else []) if isinstance(v, dict) and "mean" in v]
        group: dict[str, Any] = {"labels": list(labels)}
        for m in metrics:
            group[m] = {"mean": _mean_std([e[m]["mean"] for e in entries])[0]}
        out[name] = group
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and population std (ddof=0) of the finite values, and how many there were."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), int(v.size)


def _parse_cell(s: str) -> Any:
    if s in ("True", "False"):
        return s == "True"
    if s == "":
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


class MetricTable:
    """Rows of :func:`evaluate_case` for many cases, with summaries and writers.

    Args:
        mode, hd_method: how the rows were computed; recorded in the summary and the Markdown.
        class_names: optional names of the foreground classes (see :meth:`to_markdown`).
        distance_unit: unit of the distance metrics, recorded in the summary ("voxel" or "mm").
    """

    def __init__(
        self,
        mode: str = "paper",
        hd_method: str = "medpy",
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        distance_unit: str = "voxel",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {MODES}")
        if hd_method not in HD95_METHODS:
            raise ValueError(f"unknown HD95 method {hd_method!r}; valid: {HD95_METHODS}")
        self.mode = mode
        self.hd_method = hd_method
        self.class_names = class_names
        self.distance_unit = distance_unit
        self.rows: list[dict[str, Any]] = []
        self._cases: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, case: str, rows: Sequence[Mapping[str, Any]], **extra: Any) -> None:
        """Add the per-class rows of one case; ``extra`` (e.g. ``dataset="synapse"``) is stored on each."""
        if case in self._cases:
            logger.warning("case %r was already added to this MetricTable; adding its rows again", case)
        self._cases[case] = None
        for r in rows:
            if "class" not in r:
                raise ValueError("each row needs a 'class' key (use evaluate_case)")
            self.rows.append({"case": case, **r, **extra})

    @property
    def cases(self) -> list[str]:
        """Case names in insertion order (unique)."""
        return list(self._cases)

    @property
    def classes(self) -> list[int]:
        """Class ids present, ascending."""
        return sorted({int(r["class"]) for r in self.rows})

    @property
    def groups(self) -> dict[int, str]:
        """Class ids of label-group rows -> group name."""
        return {int(r["class"]): str(r["group"]) for r in self.rows if r.get("group")}

    @property
    def metrics(self) -> list[str]:
        """Metric columns present, in the canonical order."""
        present = {k for r in self.rows for k in r}
        return [m for m in OVERLAP_METRICS[:2] + DISTANCE_METRICS + OVERLAP_METRICS[2:] if m in present]

    def _name_map(self, class_names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
        names = self.class_names if class_names is None else class_names
        groups = self.groups
        classes = [c for c in self.classes if c not in groups]
        if names is None:
            out = {c: f"class {c}" for c in classes}
        elif isinstance(names, Mapping):
            out = {c: str(names.get(c, f"class {c}")) for c in classes}
        else:
            names = list(names)
            if len(names) != len(classes):
                raise ValueError(
                    f"class_names has {len(names)} names but the table has {len(classes)} foreground "
                    f"classes {classes}; give one name per foreground class (ascending id) or a dict"
                )
            out = dict(zip(classes, names, strict=True))
        return {**out, **groups}

    # ------------------------------------------------------------------ summaries
    def summary(self) -> dict[str, Any]:
        """Per-class mean ± std (ddof=0, NaN excluded and counted) and the papers' average.

        ``average[m]["mean"]`` is the mean over classes of the class means (what the papers call
        the average); ``average[m]["std"]`` is the std over cases of each case's mean over classes.
        """
        metrics = self.metrics
        names = self._name_map(None)
        groups = self.groups
        classes: dict[str, Any] = {}
        class_means: dict[str, list[float]] = {m: [] for m in metrics}
        by_class: dict[int, list[Mapping[str, Any]]] = {}
        for r in self.rows:
            by_class.setdefault(int(r["class"]), []).append(r)
        for c in self.classes:
            rows = by_class[c]
            entry: dict[str, Any] = {
                "name": names[c],
                "n_cases": len(rows),
                "n_gt_empty": sum(bool(r.get("gt_empty")) for r in rows),
                "n_pred_empty": sum(bool(r.get("pred_empty")) for r in rows),
                "n_both_empty": sum(bool(r.get("gt_empty")) and bool(r.get("pred_empty")) for r in rows),
                "n_missed": sum(bool(r.get("pred_empty")) and not r.get("gt_empty") for r in rows),
                "n_spurious": sum(bool(r.get("gt_empty")) and not r.get("pred_empty") for r in rows),
            }
            if c in groups:
                entry["group"] = True
            for m in metrics:
                vals = [r.get(m) for r in rows]
                mean, std, n = _mean_std(vals)
                entry[m] = {"mean": mean, "std": std, "n": n, "excluded": len(rows) - n}
                if n and c not in groups:
                    class_means[m].append(mean)
            classes[str(c)] = entry

        by_case: dict[str, list[Mapping[str, Any]]] = {}
        for r in self.rows:
            if not r.get("group"):  # the average is over labels; groups are extra rows
                by_case.setdefault(r["case"], []).append(r)
        average: dict[str, Any] = {}
        for m in metrics:
            per_case = []
            for case_rows in by_case.values():
                cm, _, n = _mean_std([r.get(m) for r in case_rows])
                if n:
                    per_case.append(cm)
            _, std, n_cases = _mean_std(per_case)
            cls_mean, _, n_cls = _mean_std(class_means[m])
            average[m] = {"mean": cls_mean, "std": std, "n_classes": n_cls, "n_cases": n_cases}
        return {
            "mode": self.mode,
            "policy": MODE_POLICIES[self.mode],
            "hd_method": self.hd_method,
            "distance_unit": self.distance_unit,
            "std": "population (ddof=0); NaN values excluded and counted per class as 'excluded'",
            "num_cases": len(self.cases),
            "metrics": metrics,
            "classes": classes,
            "average": average,
        }

    # ------------------------------------------------------------------ writers
    def columns(self) -> list[str]:
        """The CSV columns: case, class, class name, metrics, empty flags, then any extra keys."""
        first = ["case", "class", "class_name"]
        metrics = self.metrics
        flags = ["gt_empty", "pred_empty"]
        rest = [k for r in self.rows for k in r if k not in first + metrics + flags]
        return first + metrics + flags + list(dict.fromkeys(rest))

    def csv_text(self, rows: Sequence[Mapping[str, Any]] | None = None, columns: Sequence[str] | None = None,
                 header: bool = True) -> str:
        """CSV of ``rows`` (default: all) with ``columns`` (default: all present); see :meth:`to_csv`."""
        names = self._name_map(None)
        cols = list(columns or self.columns())
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        if header:
            w.writeheader()
        for r in self.rows if rows is None else rows:
            out = {k: r.get(k, "") for k in cols}
            out["class_name"] = names[int(r["class"])]
            out = {k: (repr(v) if isinstance(v, float) else v) for k, v in out.items()}
            w.writerow(out)
        return buf.getvalue()

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """One line per (case, class); NaN written as ``nan``; floats at full precision."""
        return atomic_write_text(path, self.csv_text())

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike[str], mode: str = "paper", hd_method: str = "medpy", **kwargs: Any
    ) -> MetricTable:
        """Read a table written by :meth:`to_csv` (class names are taken from the file)."""
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
        names: dict[int, str] = {}
        table = cls(mode=mode, hd_method=hd_method, **kwargs)
        for r in raw:
            row = {k: _parse_cell(v) for k, v in r.items() if k not in ("case", "class_name")}
            row["case"] = r["case"]
            names[int(row["class"])] = r.get("class_name") or f"class {row['class']}"
            table.rows.append(row)
            table._cases[row["case"]] = None
        if table.class_names is None:
            table.class_names = names
        return table

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`summary` as strict JSON (NaN → null)."""
        return atomic_write_text(path, json.dumps(json_safe(self.summary()), indent=2) + "\n")

    def to_markdown(
        self,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        metrics: Sequence[str] | None = None,
        percent: bool = True,
        digits: int = 2,
    ) -> str:
        """Markdown table: one row per metric, columns ``Average | <class 1> | <class 2> ...``.

        Cells are ``mean ± std``. Overlap metrics are shown in percent (``percent=True``) as the
        papers print them; distances in the table's unit. ``Average`` is the mean over classes
        (± std over cases of the per-case class average). A footer line records the mode, the HD95
        definition and the number of excluded (NaN) values per metric.

        ``class_names``: one name per foreground class in ascending class id, or ``{id: name}``.
        Label groups follow the classes under their group names and are not in ``Average``.
        """
        summ = self.summary()
        names = self._name_map(class_names)
        metrics = [m for m in (metrics or summ["metrics"]) if m in summ["metrics"]]
        classes = self.classes

        def cell(m: str, stats: Mapping[str, Any]) -> str:
            mean, std = stats["mean"], stats["std"]
            if not math.isfinite(mean):
                return "–"
            k = 100.0 if (percent and m in _PERCENT_METRICS) else 1.0
            return f"{mean * k:.{digits}f} ± {std * k:.{digits}f}"

        def label(m: str) -> str:
            unit = " (%)" if percent and m in _PERCENT_METRICS else ""
            if m in DISTANCE_METRICS:
                unit = f" ({self.distance_unit})"
            return _LABELS.get(m, m) + unit

        header = ["Metric", "Average"] + [names[c] for c in classes]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        for m in metrics:
            cells = [label(m), cell(m, summ["average"][m])]
            cells += [cell(m, summ["classes"][str(c)][m]) for c in classes]
            lines.append("| " + " | ".join(cells) + " |")
        excluded = {
            m: sum(summ["classes"][str(c)][m]["excluded"] for c in classes)
            for m in metrics
            if any(summ["classes"][str(c)][m]["excluded"] for c in classes)
        }
        hd_def = "pooled P95 (medpy)" if self.hd_method == "medpy" else "max of directed P95 (MONAI)"
        foot = f"mode: {self.mode}; HD95: {hd_def}; cases: {summ['num_cases']}"
        if self.groups:
            foot += "; label groups (not in Average): " + ", ".join(self.groups.values())
        if excluded:
            foot += "; excluded (NaN) values: " + ", ".join(
                f"{_LABELS.get(m, m)} {n}" for m, n in excluded.items()
            )
        lines.append("")
        lines.append(f"_{foot}_")
        return "\n".join(lines) + "\n"
