"""Evaluate a run on a split: per-image or volume-wise metrics, or the polyp protocol.

- ``image``: each 2D case is predicted at the training size, resized back to its own size, and
  scored per class (Dice, IoU, HD95, ASD, precision, recall, specificity).
- ``volume``: every slice of a volume is predicted in batches, resized back and stacked; the
  metrics are computed on the 3D volume (TransUNet's protocol), in voxels unless
  ``eval.use_spacing`` (then in mm from the volume's spacing).
- ``polyp``: M2SNet/PraNet's table (mDice, mIoU at 0.5 and over 256 thresholds, Fwβ, Sα, Eφ, MAE) on
  probability maps min-max normalised per image, as PraNet's and MSNet's test scripts save them.
- ``auto``: ``volume`` for volume cases, ``polyp`` when the recipe says so, else ``image``.

Outputs go to ``RUN_DIR/eval/<split>-<mode>/``: ``cases.csv`` (per case and class), ``summary.json``
and ``table.md`` (mean ± std per class and overall); the polyp protocol writes ``polyp.csv`` and
``polyp.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.predict import Predictor
from medseg.utils import MedsegError, atomic_write_text

_log = logging.getLogger(__name__)


def class_names_for(cfg: Any, reader: Any) -> list[str]:
    """Class names (background first): the recipe's, else the data set's (dataset.json, ACDC, Synapse)."""
    for names in (cfg.data.class_names, getattr(reader, "class_names", None)):
        if names and len(names) == cfg.data.num_classes:
            return list(names)
    return ["background"] + [f"class{c}" for c in range(1, cfg.data.num_classes)]


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    mode: str | None = None,
    protocol: str | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    save_predictions: bool = False,
    max_cases: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s model on ``split`` of ``data`` (default: the training data's root)."""
    from medseg.data.base import build_reader
    from medseg.metrics import MetricTable, evaluate_case

    run_dir = Path(run_dir)
    predictor = Predictor.from_run(run_dir, checkpoint=checkpoint, device=device)
    cfg = predictor.cfg
    dcfg = cfg.data.model_copy(update={"root": str(data)}) if data else cfg.data
    if not dcfg.root or not Path(dcfg.root).exists():
        raise MedsegError(f"data folder not found: {dcfg.root} (pass --data DIR)")
    split = split or dcfg.test_split
    mode = mode or cfg.eval.mode
    reader = build_reader(dcfg)
    ids = reader.ids(split)
    if max_cases:
        ids = ids[:max_cases]
    protocol = protocol or cfg.eval.protocol
    first = reader.load(ids[0])
    if protocol == "auto":
        protocol = "volume" if first.is_volume else "image"
    names = class_names_for(cfg, reader)
    out = Path(out_dir) if out_dir else run_dir / "eval" / f"{split}-{mode}"
    out.mkdir(parents=True, exist_ok=True)

    table = MetricTable(mode=mode, hd_method=cfg.eval.hd_method, distance_unit="mm" if cfg.eval.use_spacing else "voxel")
    polyp = None
    if protocol == "polyp":
        from medseg.metrics import PolypEvaluator

        if dcfg.num_classes != 2:
            raise MedsegError("the polyp protocol is binary: this run has more than two classes")
        polyp = PolypEvaluator(minmax=True)  # PraNet and MSNet min-max normalise every probability map
    start = time.perf_counter()
    for cid in ids:
        case = first if cid == ids[0] else reader.load(cid)
        if case.label is None:
            raise MedsegError(f"case {cid} of split {split!r} has no label: cannot evaluate")
        labels, probs = predictor.predict_case(case)
        spacing = case.spacing if cfg.eval.use_spacing else None
        rows = evaluate_case(labels, case.label, dcfg.num_classes, spacing=spacing, mode=mode, hd_method=cfg.eval.hd_method)
        table.add(cid, rows)
        if polyp is not None:
            polyp.add(cid, probs[0], case.label)
        if save_predictions:
            _save_prediction(labels, case, out / "predictions", dcfg.num_classes)
    seconds = time.perf_counter() - start

    table.to_csv(out / "cases.csv")
    summary = table.summary()
    summary.update({"split": split, "protocol": protocol, "cases": len(ids), "seconds": round(seconds, 2),
                    "class_names": names, "checkpoint": checkpoint, "data": str(dcfg.root)})
    markdown = table.to_markdown(names[1:])
    if polyp is not None:
        from medseg.metrics import polyp_markdown

        presults = polyp.results()
        polyp.to_csv(out / "polyp.csv")
        pmd = polyp_markdown({split: presults})
        atomic_write_text(out / "polyp.md", pmd + "\n")
        summary["polyp"] = presults
        markdown = pmd + "\n\n" + markdown
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    atomic_write_text(out / "table.md", markdown + "\n")
    summary["markdown"] = markdown
    summary["out_dir"] = str(out)
    return summary


def _save_prediction(labels: np.ndarray, case: Any, out: Path, num_classes: int) -> None:
    if labels.ndim == 3:
        from medseg.data.nnunet_raw import write_array_nifti, write_like

        if case.meta.get("affine") is not None:
            write_like(labels.astype(np.uint8), case, out / f"{case.id}.nii.gz")
        else:
            write_array_nifti(labels.astype(np.uint8), out / f"{case.id}.nii.gz", spacing=case.spacing)
    else:
        from medseg.engine.predict import mask_to_png_array
        from medseg.engine.visualize import save_png

        save_png(mask_to_png_array(labels, num_classes), out / f"{case.id}.png")
