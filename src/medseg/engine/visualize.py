"""Pictures of a run: contour overlays (image | truth | prediction), ``curves.png`` and per-case box plots.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure`` on an Agg canvas): no
pyplot state, no global backend switch, safe from the web demo's worker threads.

Overlays draw **contours, not fills**, with matplotlib rather than
``torchvision.utils.draw_segmentation_masks``: that function only alpha-blends filled masks on the
image's own pixel grid, so (a) a fill hides the tissue under it and a red polyp fill on red mucosa is
invisible, (b) on a 64x64 slice its edges are 1-pixel stairs at display size, and (c) it draws no
title or legend. ``ax.contour`` traces the 0.5 level between pixel centres as vector lines at the
figure's resolution, and each line gets a black outline (``patheffects.withStroke``) so a yellow or
cyan contour stays visible on red, white or black tissue.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.utils import atomic_write

#: Contour colours of classes 1, 2, ... (class 0, background, is not drawn). Yellow and cyan first:
#: they stand out on red mucosa (polyps), grey CT and black background alike; no pure red.
CLASS_COLOURS = (
    "#ffe119", "#42d4f4", "#3cb44b", "#f032e6", "#f58231", "#4363d8", "#ffffff", "#bfef45", "#fabed4",
    "#911eb4", "#dcbeff", "#aaffc3",
)


def class_colour(c: int) -> str:
    """The contour colour of foreground class ``c`` (1-based)."""
    return CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]


def default_class_names(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """``names`` when it has one name per class (background first), else ``background, class1, ...``."""
    if names and len(names) == num_classes:
        return list(names)
    return ["background"] + [f"class{c}" for c in range(1, num_classes)]


def to_display(image: np.ndarray) -> np.ndarray:
    """[C, H, W] float (any normalisation) or [H, W(, 3)] -> uint8 RGB [H, W, 3] by per-image min-max."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    img = (img * 255).round().astype(np.uint8)
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def per_class_dice(pred: np.ndarray, truth: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Dice of each foreground class present in ``pred`` or ``truth`` (a class absent from both is left out)."""
    from medseg.metrics.overlap import dice

    out = {}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        p, g = pred == c, truth == c
        if p.any() or g.any():
            out[name] = dice(p, g)
    return out


def overlay_title(case_id: str, dice: dict[str, float] | None = None) -> str:
    """``<id> — Dice liver 0.912, tumour 0.551 (mean 0.732)``; the id alone without truth or scores."""
    if not dice:
        return case_id if dice is None else f"{case_id} — no foreground in truth or prediction"
    parts = ", ".join(f"{name} {v:.3f}" for name, v in dice.items())
    mean = f" (mean {np.mean(list(dice.values())):.3f})" if len(dice) > 1 else ""
    return f"{case_id} — Dice {parts}{mean}"


def legend_labels(class_names: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, colour)`` of every foreground class, in class order: the legend of an overlay."""
    return [(name, class_colour(c)) for c, name in enumerate(class_names) if c > 0]


def _draw_contours(ax: Any, labels: np.ndarray, num_classes: int) -> None:
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=3.6, foreground="black")]
    for c in range(1, num_classes):
        mask = (labels == c).astype(np.float32)
        if mask.any() and not mask.all():
            cs = ax.contour(mask, levels=[0.5], colors=[class_colour(c)], linewidths=1.8)
            cs.set(path_effects=outline)


def overlay_figure(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray,
                   class_names: Sequence[str], title: str) -> Any:
    """A matplotlib ``Figure``: image | truth contours | prediction contours (no truth panel when ``None``)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    base = to_display(image)
    panels = [("image", None)] + ([("truth", truth)] if truth is not None else []) + [("prediction", pred)]
    h, w = base.shape[:2]
    side = 3.6  # inches per panel: ~360 px at dpi 100, whatever the image size
    pw, ph = (side, side * h / w) if w >= h else (side * w / h, side)
    fig = Figure(figsize=(pw * len(panels), ph + 1.0), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, labels) in zip(axes, panels):
        ax.imshow(base, interpolation="nearest")
        if labels is not None:
            _draw_contours(ax, np.asarray(labels), len(class_names))
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    handles = [Line2D([], [], color=col, lw=2.5, path_effects=[]) for _, col in legend_labels(class_names)]
    fig.legend(handles, [n for n, _ in legend_labels(class_names)], loc="lower center",
               ncol=min(6, max(1, len(handles))), frameon=False, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.55 / (ph + 1.0), bottom=0.45 / (ph + 1.0), wspace=0.03)
    return fig


def figure_to_array(fig: Any) -> np.ndarray:
    """A matplotlib ``Figure`` rendered to a uint8 RGB array ``[H, W, 3]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def overlay_panel(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, num_classes: int = 2,
                  class_names: Sequence[str] | None = None, case_id: str = "") -> np.ndarray:
    """The overlay figure as a uint8 RGB array; the title gives ``case_id`` and, with truth, each class's Dice."""
    names = default_class_names(num_classes, class_names)
    pred = np.asarray(pred)
    dice = per_class_dice(pred, np.asarray(truth), names) if truth is not None else None
    return figure_to_array(overlay_figure(image, truth, pred, names, overlay_title(case_id, dice)))


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8/uint16 array as PNG atomically."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib ``Figure`` as PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


# -- training curves ----------------------------------------------------------------------------
def epoch_rows(metrics_csv: str | Path) -> list[dict[str, float]]:
    """One row per epoch from Lightning's ``metrics.csv``: the epoch's non-empty cells merged, floats.

    Lightning writes a training row and a validation row per epoch (and step rows): merged by ``epoch``;
    for a key logged several times in one epoch the last value wins.
    """
    rows: dict[int, dict[str, float]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                epoch = int(float(row.get("epoch") or "nan"))
            except ValueError:
                continue
            merged = rows.setdefault(epoch, {"epoch": float(epoch)})
            for k, v in row.items():
                if k and v not in ("", None) and k != "epoch":
                    try:
                        merged[k] = float(v)
                    except ValueError:
                        pass
    return [rows[e] for e in sorted(rows)]


def best_epoch(rows: Sequence[dict[str, float]], metric: str = "dice") -> int | None:
    """The 0-based epoch of the best ``val/<metric>`` (highest Dice, lowest loss), ``None`` without validation."""
    key = f"val/{metric}"
    best: tuple[float, int] | None = None
    for r in rows:  # the first epoch of the best score wins, as in Lightning's ModelCheckpoint
        v = r.get(key)
        if v is None or not math.isfinite(v):
            continue
        if best is None or (v < best[0] if metric == "loss" else v > best[0]):
            best = (v, int(r["epoch"]))
    return None if best is None else best[1]


def _series(rows: Sequence[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"] + 1, r[key]) for r in rows if key in r and math.isfinite(r[key])]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def curves_figure(rows: Sequence[dict[str, float]], metric: str = "dice", title: str = "",
                  class_names: Sequence[str] | None = None) -> Any:
    """nnU-Net's ``progress.png`` as four panels: losses | validation Dice per class (mean bold) | learning rate
    | epoch time; the best epoch (by ``val/<metric>``) is a dashed line in every panel and a star on its score.
    ``class_names`` (background first) orders and colours the class lines as the overlays do."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 7), dpi=100)
    (ax_loss, ax_dice), (ax_lr, ax_time) = fig.subplots(2, 2)
    best = best_epoch(rows, metric)
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        x, y = _series(rows, key)
        if x:
            ax_loss.plot(x, y, "-o", ms=3, label=label)
    ax_loss.set(title="loss", xlabel="epoch", ylabel="loss")
    logged = {k for r in rows for k in r if k.startswith("val/dice/")}
    order = [f"val/dice/{n}" for n in (class_names or [])[1:]]
    class_keys = [k for k in order if k in logged] + sorted(logged - set(order))
    for key in class_keys:
        c = order.index(key) + 1 if key in order else len(order) + 1 + sorted(logged - set(order)).index(key)
        x, y = _series(rows, key)
        ax_dice.plot(x, y, "-o", ms=2.5, lw=1.2, color=class_colour(c), label=key.split("/", 2)[2],
                     path_effects=_thin_outline())
    x, y = _series(rows, "val/dice")
    if x:
        ax_dice.plot(x, y, "-o", ms=3, lw=2.2, color="black", label="mean")
    ax_dice.set(title="validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    x, y = _series(rows, "train/lr")
    if x:
        ax_lr.plot(x, y, "-", color="tab:purple")
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    x, y = _series(rows, "train/epoch_s")
    if x:
        ax_time.plot(x, y, "-o", ms=3, color="tab:brown")
    ax_time.set(title="epoch time", xlabel="epoch", ylabel="seconds", ylim=(0, None))
    for ax in (ax_loss, ax_dice, ax_lr, ax_time):
        if best is not None:
            ax.axvline(best + 1, color="tab:red", ls="--", lw=1, label=f"best epoch {best + 1}" if ax is ax_dice else None)
        if ax.lines:
            ax.set_xlim(0.5, max(1.5, max(r["epoch"] for r in rows) + 1.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if best is not None:
        row = next(r for r in rows if int(r["epoch"]) == best)
        if f"val/{metric}" in row:
            target = ax_dice if metric == "dice" else ax_loss
            target.plot([best + 1], [row[f"val/{metric}"]], "*", ms=14, color="tab:red", zorder=5)
    for ax in (ax_loss, ax_dice):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    return fig


def _thin_outline() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.4, foreground="0.25")]


def plot_curves(metrics_csv: str | Path, path: str | Path, metric: str = "dice", title: str = "",
                class_names: Sequence[str] | None = None) -> Path | None:
    """``curves.png`` from a run's ``metrics.csv``; ``None`` (nothing written) when it holds no epoch yet."""
    if not Path(metrics_csv).is_file():
        return None
    rows = epoch_rows(metrics_csv)
    if not rows:
        return None
    return save_figure(curves_figure(rows, metric, title, class_names), path)


# -- per-case box plot of an evaluation ---------------------------------------------------------
def cases_figure(values: dict[str, Sequence[float]], metric: str = "dice", title: str = "") -> Any:
    """Box plot of ``metric`` per class over cases, with every case as a jittered point (NaN left out)."""
    from matplotlib.figure import Figure

    names = list(values)
    fig = Figure(figsize=(1.8 + 1.2 * len(names), 4.2), dpi=100)
    ax = fig.subplots()
    data = [np.asarray([v for v in values[n] if v == v], dtype=float) for n in names]
    ax.boxplot(data, positions=range(len(names)), widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=12, alpha=0.7, zorder=3,
                   color=class_colour(i + 1), edgecolors="0.2", linewidths=0.5)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={len(d)})" for n, d in zip(names, data)])
    ax.set_ylabel(("Dice" if metric == "dice" else metric) + " per case")
    if metric in ("dice", "iou", "precision", "recall", "specificity"):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
