"""``medseg predict``: every image / volume of a file or folder through one run, an ``.onnx`` file or an
ensemble, one mask per input (above :mod:`medseg.engine.predict` and :mod:`medseg.engine.ensemble`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.predict import IMAGE_SUFFIXES, _stem, guarded, list_inputs, mask_to_png_array
from medseg.utils import check_output_dir


def predict_paths(
    run_dir: str | Path | list[Path],
    inputs: str | Path,
    output: str | Path,
    *,
    overlay: bool = False,
    probabilities: bool = False,
    checkpoint: str = "best",
    device: str = "cpu",
    fast: bool | None = None,
    compile: bool = False,
    fail_fast: bool = False,
    allow_nonfinite: bool = False,
    overrides: list[str] | None = None,
    precision: str | None = None,
) -> tuple[list[Path], list[str]]:
    """Predict every image / volume under ``inputs``; write one mask per input with the same stem.

    ``run_dir`` is a run folder or an exported ``.onnx`` file, or a list of them and cross-validation folders:
    an ensemble averaging their probabilities (:mod:`medseg.engine.ensemble`); ``fast`` / ``compile`` /
    ``precision`` as in :class:`Predictor`.
    A bad input (unreadable, empty, NaN/Inf values unless ``allow_nonfinite``) does not stop the others:
    returns the written masks and one line per failed input (``"<file>: <problem>"``); with
    ``fail_fast`` the first failure raises :class:`~medseg.utils.DataError` instead. ``overrides``
    (``predict --set key=value``) change ``data.*`` / ``eval.*`` keys of the run's config, as in ``evaluate``.
    """
    from medseg.engine.ensemble import open_predictor

    runs = [Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    predictor = open_predictor(runs, checkpoint=checkpoint, device=device, fast=fast, compile=compile,
                               precision=precision, overrides=overrides, command="predict")
    paths = list_inputs(Path(inputs))
    out_dir = check_output_dir(output)
    written: list[Path] = []
    failures: list[str] = []
    options = {"overlay": overlay, "probabilities": probabilities, "allow_nonfinite": allow_nonfinite}
    from medseg.progress import progress_bar

    with progress_bar("predict", len(paths)) as bar:  # closed before a --fail-fast error is printed
        for path in paths:
            done = guarded(str(path), partial(_predict_file, predictor, path, out_dir, **options), failures,
                           fail_fast=fail_fast)
            bar.advance()
            if done is not None:
                written.append(done)
    return written, failures


def _predict_file(predictor: Any, path: Path, out_dir: Path, *, overlay: bool, probabilities: bool,
                  allow_nonfinite: bool) -> Path:
    """Predict one image / volume file into ``out_dir``; returns the mask's path."""
    from medseg.data.base import check_image
    from medseg.engine.visualize import overlay_panel, save_png

    stem = _stem(path)
    lower = path.name.lower()
    k = predictor.num_classes
    channels = predictor.cfg.data.in_channels
    if lower.endswith(IMAGE_SUFFIXES):
        from medseg.data.image_folder import read_image

        image = check_image(read_image(path, channels), path, allow_nonfinite=allow_nonfinite)
        labels, probs = predictor.predict_images([image], source=str(path))[0]
        mask = save_png(mask_to_png_array(labels, k), out_dir / f"{stem}.png")
        if overlay:
            save_png(overlay_panel(image, None, labels, k, class_names=predictor.cfg.data.class_names, case_id=stem),
                     out_dir / "overlays" / f"{stem}.png")
        if probabilities:
            for c in range(probs.shape[0]) if probs.shape[0] > 1 else [0]:
                suffix = "" if probs.shape[0] == 1 else f"_c{c}"
                save_png((probs[c] * 255).round().astype(np.uint8), out_dir / "probabilities" / f"{stem}{suffix}.png")
        return mask
    if lower.endswith((".nii.gz", ".nii")):
        from medseg.data.nnunet_raw import load_nifti_case, write_like

        case = load_nifti_case(path, in_channels=channels)
        case.image = check_image(case.image, path, allow_nonfinite=allow_nonfinite)
        labels, probs = predictor.predict_volume(case.image, kind="nifti", source=str(path))
        mask = write_like(labels.astype(np.uint8), case, out_dir / f"{stem}.nii.gz")
    else:
        from medseg.data.nnunet_raw import write_array_nifti
        from medseg.data.transunet import load_volume_file

        case = load_volume_file(path, in_channels=channels)
        case.image = check_image(case.image, path, allow_nonfinite=allow_nonfinite)
        labels, probs = predictor.predict_case(case)
        mask = write_array_nifti(labels.astype(np.uint8), out_dir / f"{stem}.nii.gz", spacing=case.spacing)
    if probabilities:
        np.save(out_dir / f"{stem}_probabilities.npy", probs.astype(np.float16))
    return mask
