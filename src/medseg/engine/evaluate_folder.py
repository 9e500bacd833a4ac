"""Evaluate a folder of predicted masks against a folder of reference masks (``medseg evaluate --pred --truth``).

For predictions made by any tool (nnU-Net, MONAI, another medseg run): PNG masks (binary ``{0, 255}``
or ``{0, 1}``, multi-class indices; read as :func:`medseg.data.image_folder.read_mask` reads data
masks) or NIfTI label volumes. Files are matched by name: the stem (``case.png``), or the nnU-Net
case name (``case.nii.gz``; a ``case_0000.nii.gz`` prediction also matches ``case``). Every
reference case is evaluated; a reference without a prediction is a failed case (one line, exit 1),
a prediction without a reference is ignored with a warning.

The scoring is :func:`medseg.engine.evaluate.evaluate_split` itself (same protocols, modes and
files: ``cases.csv``, ``summary.json``, ``table.md``, ``polyp.*``), fed by a reader of the
reference folder and a "predictor" that reads the predicted mask instead of running a model. The
polyp protocol then scores the masks as probability maps (what it does with any binary map).

Output: ``out`` if given, else ``<PRED>-eval/<protocol>-<mode>[...]/`` beside the prediction folder
(:func:`default_out`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config, resolve_mode, resolve_protocol, validate
from medseg.data.base import Case
from medseg.utils import DataError, MedsegError, atomic_write_text

_log = logging.getLogger(__name__)

PNG_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_name(path: Path) -> str | None:
    """A mask file's case name (stem; NIfTI ``<case>_0000`` -> ``<case>``), or ``None`` if not a mask file."""
    from medseg.data.nnunet_raw import split_channel

    name = path.name
    lower = name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        case, channel = split_channel(name)
        if channel == 0:
            return case
        return name[: -len(".nii.gz")] if lower.endswith(".nii.gz") else name[: -len(".nii")]
    if lower.endswith(PNG_SUFFIXES):
        return path.stem
    return None


def list_masks(folder: Path, what: str) -> dict[str, Path]:
    """Case name -> mask file of ``folder`` (two files of one case are an error)."""
    if not folder.is_dir():
        raise MedsegError(f"--{what} folder not found: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = case_name(p) if p.is_file() and not p.name.startswith(".") else None
        if name is None:
            continue
        if name in out:
            raise MedsegError(f"{folder}: two files for case {name!r}: {out[name].name} and {p.name}")
        out[name] = p
    if not out:
        raise MedsegError(f"{folder}: no masks (PNG or NIfTI)")
    return out


def read_labels(path: Path, num_classes: int) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A mask file -> (int64 labels ``[H, W]`` or ``[D, H, W]``, spacing in array axis order or ``None``)."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        from medseg.data.nnunet_raw import _load_nifti, _read_label, slice_axes

        img = _load_nifti(path)
        axes = slice_axes(img.affine, 3)
        labels = _read_label(path, None, num_classes, axes)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        return labels, tuple(zooms[a] for a in axes) if len(zooms) == 3 else None
    from medseg.data.image_folder import read_mask

    return read_mask(path, num_classes), None


def infer_num_classes(paths: list[Path]) -> int:
    """Classes (with background) the reference masks hold: 2 when every file is ``{0, 1}`` / ``{0, 255}``."""
    top = 1
    for p in paths:
        if p.name.lower().endswith(NIFTI_SUFFIXES):
            from medseg.data.nnunet_raw import _load_nifti

            values = np.unique(np.asanyarray(_load_nifti(p).dataobj))
        else:
            from PIL import Image

            with Image.open(p) as im:
                a = np.asarray(im)
            values = np.unique(a.max(axis=-1) if a.ndim == 3 and im.mode != "P" else a)
        binary = set(values.tolist()) <= {0, 255}
        top = max(top, 1 if binary else int(values.max()))
    return top + 1


class MaskFolderReader:
    """The reference folder as a reader for :func:`~medseg.engine.evaluate.evaluate_split`.

    ``load`` gives a :class:`Case` whose ``label`` is the reference mask and whose ``image`` is the
    predicted mask (as float, one channel): :class:`MaskPredictor` returns it as the prediction.
    """

    def __init__(self, truth: dict[str, Path], pred: dict[str, Path], num_classes: int) -> None:
        self.truth, self.pred, self.num_classes = truth, pred, num_classes
        self.class_names = None

    def ids(self, split: str = "") -> list[str]:
        return list(self.truth)

    def num_slices(self, case_id: str) -> int | None:
        path = self.truth[case_id]
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            return None
        from medseg.data.nnunet_raw import _load_nifti

        shape = _load_nifti(path).shape
        return int(shape[2]) if len(shape) >= 3 else None

    def load(self, case_id: str) -> Case:
        if case_id not in self.pred:
            raise DataError(f"case {case_id}: no prediction for {self.truth[case_id].name}")
        label, spacing = read_labels(self.truth[case_id], self.num_classes)
        pred, _ = read_labels(self.pred[case_id], self.num_classes)
        if pred.shape != label.shape:
            raise DataError(f"case {case_id}: prediction shape {pred.shape} differs from the reference's {label.shape}")
        meta = {"image_path": str(self.pred[case_id]), "label_path": str(self.truth[case_id])}
        return Case(id=case_id, image=pred[None].astype(np.float32), label=label, spacing=spacing, meta=meta)


class MaskPredictor:
    """Stands in for a :class:`~medseg.engine.predict.Predictor`: the "prediction" is the read mask."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def predict_case(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        labels = case.image[0].astype(np.int64)
        if self.cfg.data.num_classes == 2:
            return labels, (labels > 0).astype(np.float32)[None]
        probs = np.stack([(labels == c) for c in range(self.cfg.data.num_classes)]).astype(np.float32)
        return labels, probs


def default_out(pred: Path, tag: str) -> Path:
    """``<PRED>-eval/<tag>``: beside the prediction folder, never inside it."""
    pred = pred.resolve()
    return pred.with_name(pred.name + "-eval") / tag


def evaluate_folder(
    pred: str | Path,
    truth: str | Path,
    *,
    num_classes: int | None = None,
    protocol: str | None = None,
    mode: str | None = None,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    fail_fast: bool = False,
) -> dict[str, Any]:
    """Score the masks of ``pred`` against those of ``truth`` (see the module docstring); returns the summary.

    ``overrides``: ``eval.*`` / ``data.class_names`` items (``key=value``) of the default config, e.g.
    ``eval.use_spacing=true`` or ``eval.hd_method=monai``.
    """
    from medseg.config import apply_overrides
    from medseg.engine.evaluate import check_eval_overrides, eval_tag, evaluate_split, prepare_eval_dir

    pred, truth = Path(pred), Path(truth)
    truth_files, pred_files = list_masks(truth, "truth"), list_masks(pred, "pred")
    extra = sorted(set(pred_files) - set(truth_files))
    if extra:
        _log.warning("%d prediction(s) without a reference mask ignored (e.g. %s)", len(extra), extra[0])
    if not set(pred_files) & set(truth_files):
        raise MedsegError(f"no prediction in {pred} matches a reference mask in {truth} by name")
    k = num_classes or infer_num_classes(list(truth_files.values()))
    check_eval_overrides(overrides or [])
    cfg = validate(apply_overrides({"data": {"num_classes": k}}, list(overrides or [])), where="--pred/--truth")
    reader = MaskFolderReader(truth_files, pred_files, k)
    volume = reader.num_slices(next(iter(truth_files))) is not None
    protocol = resolve_protocol(protocol or cfg.eval.protocol, volume)
    mode = resolve_mode(mode or cfg.eval.mode, protocol)
    tag = eval_tag(protocol, mode, tta=False, aggregate=cfg.eval.aggregate)
    out = prepare_eval_dir(Path(out_dir) if out_dir else default_out(pred, tag))
    summary = evaluate_split(MaskPredictor(cfg), reader, reader.ids(), split="folder", mode=mode, protocol=protocol,
                             out=out, fail_fast=fail_fast)
    summary.update({"pred": str(pred), "truth": str(truth), "num_classes": k})
    from medseg.engine.evaluate import _without_markdown

    atomic_write_text(out / "summary.json", json.dumps(_without_markdown(summary), indent=2, default=float))
    return summary
