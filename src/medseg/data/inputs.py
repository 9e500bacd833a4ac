"""What a run records about its inputs (``data.inputs``) and how each input is checked against it.

At training time :func:`record_inputs` fills ``data.inputs``: the per-kind normalisations a data set
declares (the built-in phantom-ct's ``builtin.json``: its NIfTI volumes hold HU, its PNGs the window
[-160, 240] HU divided by 255) and the training inputs' intensity range after normalisation.
:class:`~medseg.engine.predict.Predictor` normalises each input by its kind and warns (one line) when an
input lies far outside that range.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medseg.config import DataConfig, NormalizeConfig

_log = logging.getLogger(__name__)

#: The input kind of the files each data format reads.
FORMAT_KIND = {"image_folder": "image", "pranet": "image", "nnunet_raw": "nifti", "transunet": "h5"}
#: Training cases read to measure the intensity range.
RANGE_CASES = 8
#: Values sampled per image or volume for percentiles.
RANGE_SAMPLES = 200_000


def input_kind(path: str | Path | None) -> str:
    """``nifti`` for ``.nii``/``.nii.gz``, ``h5`` for TransUNet's ``.h5``/``.npz``, else ``image``."""
    name = str(path or "").lower()
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith((".h5", ".npz")):
        return "h5"
    return "image"


def declared_normalize(root: str | Path | None) -> dict[str, Any]:
    """Per-kind normalisations a data folder declares (``builtin.json`` ``inputs``), else ``{}``."""
    p = Path(root or "") / "builtin.json"
    try:
        return dict(json.loads(p.read_text()).get("inputs") or {}) if p.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return {}


def normalized_values(image: np.ndarray, cfg: NormalizeConfig) -> np.ndarray | None:
    """``image`` [C, ...] normalised as ``cfg`` says (None for per-image ``zscore``, in range by design)."""
    x = np.asarray(image, dtype=np.float32)
    if cfg.kind == "unit":
        return x
    if cfg.kind == "window" and cfg.window is not None:
        lo, hi = (float(v) for v in cfg.window)
        return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if cfg.kind == "imagenet":
        from medseg.data.transforms import normalize_transform

        flat = x.reshape(x.shape[0], -1, 1)  # one [C, N, 1] "image" through the same per-channel transform
        return np.asarray(normalize_transform(cfg, x.shape[0])({"image": flat})["image"])
    return None


def percentiles(values: np.ndarray) -> tuple[float, float]:
    """0.5th and 99.5th percentiles of (an even subsample of) ``values``."""
    flat = values.reshape(-1)
    flat = flat[:: max(1, flat.size // RANGE_SAMPLES)]
    lo, hi = np.percentile(flat, [0.5, 99.5])
    return round(float(lo), 4), round(float(hi), 4)


def training_range(cfg: DataConfig) -> tuple[float, float] | None:
    """Intensity range of up to :data:`RANGE_CASES` training cases after normalisation (None if not measurable)."""
    from medseg.data.readers import build_reader

    reader = build_reader(cfg)
    ids = reader.ids(cfg.train_split)
    picks = [ids[i] for i in np.linspace(0, len(ids) - 1, min(RANGE_CASES, len(ids))).round().astype(int)] if ids else []
    parts = []
    for cid in dict.fromkeys(picks):
        v = normalized_values(reader.load(cid).image, cfg.normalize)
        if v is None:
            return None
        parts.append(v.reshape(-1)[:: max(1, v.size // RANGE_SAMPLES)])
    return percentiles(np.concatenate(parts)) if parts else None


def record_inputs(cfg: DataConfig) -> DataConfig:
    """``cfg`` with ``inputs`` filled where empty: the data folder's declared per-kind normalisations
    (other kinds than the training files') and the training range. Unreadable data leaves it empty
    (the pre-flight check reports the file)."""
    from medseg.config import InputsConfig

    train_kind = FORMAT_KIND.get(cfg.format, "image")
    normalize = dict(cfg.inputs.normalize) or {k: v for k, v in declared_normalize(cfg.root).items() if k != train_kind}
    rng = cfg.inputs.range
    if rng is None:
        try:
            rng = training_range(cfg)
        except Exception as err:  # noqa: BLE001 - the data checks that follow name the bad file
            _log.debug("no training intensity range: %s", err)
    inputs = InputsConfig.model_validate({"normalize": normalize, "range": rng})
    return cfg.model_copy(update={"inputs": inputs})


def range_warning(values: np.ndarray | None, train: tuple[float, float] | None, source: str) -> str | None:
    """One line when normalised ``values`` lie far outside the training range ``train``, else None.

    Far: the input's 0.5-99.5 percentile span reaches more than one training span beyond either end,
    or is under 5 % of the training span (e.g. [0, 1] PNG values into a run trained on HU).
    """
    if values is None or train is None or values.size == 0:
        return None
    lo, hi = train
    span = max(hi - lo, 1e-6)
    a, b = percentiles(values)
    if a >= lo - span and b <= hi + span and b - a >= 0.05 * span:
        return None
    return (f"{source}: input intensities after normalisation span [{a:.3g}, {b:.3g}], far from the training "
            f"inputs' [{lo:.3g}, {hi:.3g}]: other units or window? predictions may be meaningless; "
            "--set data.normalize=... maps raw inputs (e.g. \"{kind: window, window: [-160, 240]}\" for CT in HU)")
