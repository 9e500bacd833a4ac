"""The Python API behind ``medseg.load_run`` and ``medseg.predict`` (re-exported lazily by :mod:`medseg`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medseg.engine.predict import Predictor


def load_run(run: str | Path, checkpoint: str = "best", device: str = "cpu", **kwargs: Any) -> Predictor:
    """A :class:`~medseg.engine.predict.Predictor` for a run folder (or an exported ``.onnx`` file).

    Load once and call ``predict(predictor, image)`` (or ``predictor.predict_images``) for many images.
    """
    from medseg.engine.predict import Predictor

    return Predictor.from_run(run, checkpoint=checkpoint, device=device, **kwargs)


def predict(run: str | Path | Predictor, image: Any, *, checkpoint: str = "best", device: str = "cpu") -> np.ndarray:
    """The label map (int64, at the image's own size) that the run predicts for one image.

    ``run``: a run folder, an ``.onnx`` file or a loaded :class:`Predictor`. ``image``: a file (PNG/JPEG/...
    image: ``[H, W]``; NIfTI or TransUNet h5/npz volume: ``[D, H, W]``), or a numpy array / torch tensor
    ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``, or a PIL image -- converted, scaled and normalised as the
    run's training data (see :meth:`Predictor.as_image`; a float array above 1 for a run that expects [0, 1]
    is a :class:`MedsegError`). Binary runs give {0, 1}, K-class runs 0..K-1.
    """
    from medseg.engine.predict import Predictor

    predictor = run if isinstance(run, Predictor) else load_run(run, checkpoint=checkpoint, device=device)
    if isinstance(image, (str, Path)):
        return _predict_file(predictor, Path(image))
    return predictor.predict_images([predictor.as_image(image, strict=True)])[0][0]


def _predict_file(predictor: Predictor, path: Path) -> np.ndarray:
    from medseg.engine.predict import IMAGE_SUFFIXES, VOLUME_SUFFIXES
    from medseg.utils import MedsegError

    in_channels = predictor.cfg.data.in_channels
    name = path.name.lower()
    if not path.is_file():
        raise MedsegError(f"image file not found: {path}")
    if name.endswith(IMAGE_SUFFIXES):
        from medseg.data.image_folder import read_image

        return predictor.predict_images([read_image(path, in_channels)])[0][0]
    if name.endswith((".nii.gz", ".nii")):
        from medseg.data.nnunet_raw import load_nifti_case

        return predictor.predict_case(load_nifti_case(path, in_channels=in_channels))[0]
    if name.endswith((*VOLUME_SUFFIXES, ".npz")):
        from medseg.data.transunet import load_volume_file

        return predictor.predict_case(load_volume_file(path, in_channels=in_channels))[0]
    raise MedsegError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or volume ({', '.join(VOLUME_SUFFIXES)})")
