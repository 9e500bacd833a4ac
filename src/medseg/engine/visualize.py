"""Overlay panels (image | truth | prediction) and PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.utils import atomic_write

# Distinct colours for classes 1..; class 0 (background) stays transparent.
PALETTE = np.array(
    [
        [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
    ],
    dtype=np.uint8,
)


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


def colorize(labels: np.ndarray, base: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over ``base`` (uint8 RGB) or black."""
    labels = np.asarray(labels).astype(np.int64)
    colours = PALETTE[labels % len(PALETTE)]
    if base is None:
        return colours
    out = base.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.round().astype(np.uint8)


def overlay_panel(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """Side-by-side image | truth overlay | prediction overlay (truth omitted when ``None``)."""
    base = to_display(image)
    tiles = [base]
    if truth is not None:
        tiles.append(colorize(truth, base))
    tiles.append(colorize(pred, base))
    sep = np.full((base.shape[0], 4, 3), 255, dtype=np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(sep)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8/uint16 array as PNG atomically."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))
