"""What the demo does with one upload, without any web library: predict, draw, measure, write the mask.

:class:`DemoSession` wraps a :class:`~medseg.engine.predict.Predictor` (a run folder or an ``.onnx`` file);
:meth:`DemoSession.segment` predicts an image (PNG/JPG/...) or a NIfTI volume through the Python API
(:func:`medseg.api.predict`), :meth:`DemoSession.overlay` draws one slice as image | prediction contours
and :func:`area_rows` / :func:`area_markdown` give each class's area (pixels, % of the image and, when the
file states its voxel spacing, mm²; for volumes also voxels and mL of the whole volume).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.visualize import default_class_names, overlay_panel
from medseg.utils import MedsegError


@dataclass
class Segmentation:
    """One upload's result: ``labels`` ``[H, W]`` or ``[D, H, W]``, the image to show (same layout, float,
    display-windowed), the voxel spacing in array order (mm) when known, and the written mask file."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] | None
    mask_path: Path

    @property
    def is_volume(self) -> bool:
        return self.labels.ndim == 3

    @property
    def slices(self) -> int:
        return self.labels.shape[0] if self.is_volume else 1

    def slice(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, labels) of slice ``index`` (0-based, clipped); a 2D result ignores ``index``."""
        if not self.is_volume:
            return self.image, self.labels
        i = int(np.clip(index, 0, self.slices - 1))
        return self.image[i], self.labels[i]


def _display_window(volume: np.ndarray) -> np.ndarray:
    """A volume clipped to its 0.5-99.5th percentiles, so every slice is shown with the same contrast."""
    lo, hi = np.percentile(volume, [0.5, 99.5])
    return np.clip(volume, lo, hi) if hi > lo else volume


class DemoSession:
    """A loaded model and the folder its masks are written to (a new temporary folder by default)."""

    def __init__(self, source: str | Path, *, checkpoint: str = "best", device: str = "cpu",
                 workdir: str | Path | None = None) -> None:
        from medseg.api import load_run

        self.source = Path(source)
        self.predictor = load_run(source, checkpoint=checkpoint, device=device)
        data = self.predictor.cfg.data
        self.num_classes = data.num_classes
        self.class_names = default_class_names(data.num_classes, data.class_names)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="medseg-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        """One line: the model, its source and its classes."""
        cfg = self.predictor.cfg
        return (f"model `{cfg.model.name}` (recipe `{cfg.name}`) from `{self.source.name}`: {cfg.data.in_channels} "
                f"input channel(s), classes {', '.join(self.class_names[1:])}")

    def segment(self, path: str | Path) -> Segmentation:
        """Predict ``path`` (an image file or a NIfTI volume) and write its mask (PNG or NIfTI) into a new folder."""
        from medseg.api import predict
        from medseg.engine.predict import IMAGE_SUFFIXES, _stem, mask_to_png_array
        from medseg.engine.visualize import save_png

        path = Path(path)
        lower = path.name.lower()
        labels = predict(self.predictor, path)  # the Python API: same preprocessing as `medseg predict`
        out = Path(tempfile.mkdtemp(dir=self.workdir))
        stem = _stem(path)
        if lower.endswith(IMAGE_SUFFIXES):
            from medseg.data.image_folder import read_image

            image = read_image(path, self.predictor.cfg.data.in_channels)
            mask = save_png(mask_to_png_array(labels, self.num_classes), out / f"{stem}_mask.png")
            return Segmentation(stem, image, labels, None, mask)
        if lower.endswith((".nii.gz", ".nii")):
            from medseg.data.nnunet_raw import load_nifti_case, write_like

            case = load_nifti_case(path, in_channels=self.predictor.cfg.data.in_channels)
            volume = _display_window(case.image[0])  # first channel [D, H, W]
            mask = write_like(labels.astype(np.uint8), case, out / f"{stem}_mask.nii.gz")
            spacing = tuple(float(s) for s in case.spacing) if case.spacing is not None else None
            return Segmentation(stem, volume, labels, spacing, mask)
        raise MedsegError(f"{path.name}: upload an image ({', '.join(IMAGE_SUFFIXES)}) or a NIfTI volume (.nii.gz, .nii)")

    def overlay(self, seg: Segmentation, index: int = 0) -> np.ndarray:
        """Image | prediction contours of slice ``index`` (legend: class names), uint8 RGB."""
        image, labels = seg.slice(index)
        title = seg.name + (f" — slice {int(np.clip(index, 0, seg.slices - 1)) + 1}/{seg.slices}" if seg.is_volume else "")
        return overlay_panel(image, None, labels, self.num_classes, class_names=self.class_names, case_id=title)


def area_rows(seg: Segmentation, class_names: list[str], index: int = 0) -> list[dict[str, Any]]:
    """Per foreground class: ``pixels`` and ``percent`` of the shown image (slice), ``mm2`` when the spacing
    is known (else ``None``); for volumes also ``voxels`` and ``ml`` (``None`` without spacing) of the volume."""
    _, labels = seg.slice(index)
    pixel_mm2 = float(np.prod(seg.spacing[-2:])) if seg.spacing is not None else None
    voxel_ml = float(np.prod(seg.spacing)) / 1000.0 if seg.spacing is not None and seg.is_volume else None
    rows = []
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        n = int(np.count_nonzero(labels == c))
        row: dict[str, Any] = {"class": name, "pixels": n, "percent": 100.0 * n / labels.size,
                               "mm2": None if pixel_mm2 is None else n * pixel_mm2}
        if seg.is_volume:
            v = int(np.count_nonzero(seg.labels == c))
            row.update(voxels=v, ml=None if voxel_ml is None else v * voxel_ml)
        rows.append(row)
    return rows


def area_markdown(seg: Segmentation, class_names: list[str], index: int = 0) -> str:
    """:func:`area_rows` as a Markdown table, with a line on what the units are."""
    rows = area_rows(seg, class_names, index)
    where = f"slice {int(np.clip(index, 0, seg.slices - 1)) + 1}" if seg.is_volume else "image"
    head = ["class", f"pixels ({where})", f"% of {where}"]
    if seg.spacing is not None:
        head.append("mm²")
    if seg.is_volume:
        head += ["voxels (volume)"] + (["mL (volume)"] if seg.spacing is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["class"], f"{r['pixels']:,}", f"{r['percent']:.2f}"]
        if seg.spacing is not None:
            cells.append(f"{r['mm2']:.1f}")
        if seg.is_volume:
            cells.append(f"{r['voxels']:,}")
            if seg.spacing is not None:
                cells.append(f"{r['ml']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    h, w = seg.labels.shape[-2:]
    note = (f"{h}x{w} pixels" + (f", spacing {' x '.join(f'{s:g}' for s in seg.spacing)} mm" if seg.spacing
                                 else "; the file states no pixel spacing, so areas are in pixels"))
    return "\n".join(lines) + f"\n\n_{note}_"
