"""Settings derived from a 2D image folder for the ``auto`` values of a recipe (the ``unet`` starting point).

``medseg train --recipe unet --data DIR`` leaves ``data.in_channels``, ``num_classes``, ``normalize.kind``,
``size`` and the split names at ``auto``; :func:`derive_data_settings` fills them from the folder before
anything else reads it, and describes what it chose in one line (``data.derived``, saved in the run's
``config.yaml``, so ``predict`` / ``evaluate`` use the same values). A value given explicitly (``--set``, a
recipe file with ``base: unet``) is never replaced.

- ``in_channels``: 3 if any sampled image has colour (RGB whose channels differ), else 1 (grey; RGB files
  with equal channels count as grey).
- ``num_classes``: from the values in every mask: only {0, 1} or only {0, 255} (or JPEG masks, whose noise
  the reader thresholds at 128) -> 2 (binary); class indices 0..K-1 (all below 128) -> K. Anything else
  (e.g. 0/128/255) is ambiguous: one line asking for ``data.num_classes``.
- ``normalize.kind``: ``zscore`` per image and channel (nnU-Net's default for non-CT images: 8-, 12- or 16-bit
  files alike), except ``imagenet`` for RGB images into a pretrained backbone (``model.kwargs.pretrained``).
- ``size``: the median image size, scaled down so the longer side is at most :data:`MAX_SIDE`, each side
  rounded to a multiple of the model's stride.
- splits: ``splits/<name>.txt`` lists when the folder has them (``train``, ``val``, ``test``, or the one list
  whose name contains the word, e.g. ``pranet_train``); no validation list: a seeded ``val_fraction`` of
  the training list; no lists at all: a seeded train / val / test split of every image.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import auto_keys
from medseg.utils import DataError

if TYPE_CHECKING:
    from medseg.config import DataConfig, ModelConfig

_log = logging.getLogger(__name__)

AUTO = "auto"
#: Longest side of a derived training size (larger images are scaled down to it).
MAX_SIDE = 256
#: Images decoded to tell grey from colour; image headers read for the median size.
CHANNEL_SAMPLES = 16
SIZE_SAMPLES = 2000
_ROLES = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}


def _evenly(items: list[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def image_channels(paths: list[Path]) -> tuple[int, str]:
    """(1 or 3, why): colour if any of up to :data:`CHANNEL_SAMPLES` images has channels that differ."""
    from PIL import Image

    sample = _evenly(paths, CHANNEL_SAMPLES)
    for p in sample:
        with Image.open(p) as im:
            if im.mode in ("L", "LA", "1", "I", "F") or im.mode.startswith("I;"):
                continue
            a = np.asarray(im.convert("RGB"))
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            return 3, f"colour, e.g. {p.name}"
    return 1, f"grey, {len(sample)} images checked"


def _mask_values(path: Path) -> tuple[np.ndarray, bool]:
    """(distinct values, channels differ) of one mask file, as the reader decodes it."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "PA"):
            a = np.asarray(im)[..., :-1]
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
            a = np.asarray(im.convert("RGB"))
        else:
            a = np.asarray(im)
    colour = a.ndim == 3 and a.shape[-1] > 1 and not all(np.array_equal(a[..., 0], a[..., c]) for c in range(a.shape[-1]))
    if a.ndim == 3:
        a = a.max(axis=-1)
    if a.dtype == np.uint8:
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256)), colour
    return np.unique(a), colour


def mask_classes(masks: list[Path], where: str) -> tuple[int, str]:
    """(num_classes, why) from the values of every mask (see the module docstring)."""
    if not masks:
        raise DataError(f"{where}: no masks to derive data.num_classes from; set it")
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(_mask_values, masks))
    values = np.unique(np.concatenate([v for v, _ in found]))
    colour = any(c for _, c in found)
    jpeg = any(p.suffix.lower() in (".jpg", ".jpeg") for p in masks)
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    if values.size and (values.min() < 0 or np.any(values != np.round(values))):
        raise DataError(f"{where}: masks hold values {shown}: not class indices; set data.num_classes")
    top = float(values.max()) if values.size else 0.0
    if top == 0:
        raise DataError(f"{where}: every mask is empty (only 0): cannot tell the classes; set data.num_classes")
    if top <= 1:
        return 2, "binary masks (0/1)"
    if top >= 128:
        if set(values.tolist()) <= {0, 255} or jpeg or colour:
            return 2, "binary masks (0/255" + (", thresholded at 128)" if len(values) > 2 else ")")
        raise DataError(f"{where}: masks hold values {shown}: neither binary (0/1, 0/255) nor class indices "
                        "0..K-1; set data.num_classes (2: thresholded at 128)")
    k = int(top) + 1
    absent = sorted(set(range(k)) - {int(v) for v in values})
    note = f"; no pixel of class {', '.join(map(str, absent))}" if absent else ""
    return k, f"mask values 0..{k - 1}{note}"


def median_size(paths: list[Path], stride: int) -> tuple[tuple[int, int], str]:
    """(training size, why): the median image size, longer side at most :data:`MAX_SIDE`, multiples of ``stride``."""
    from PIL import Image

    sizes = []
    for p in _evenly(paths, SIZE_SAMPLES):
        with Image.open(p) as im:
            sizes.append((im.height, im.width))
    h, w = (float(v) for v in np.median(np.asarray(sizes), axis=0))
    scale = min(1.0, MAX_SIDE / max(h, w))
    out = tuple(max(stride, stride * round(v * scale / stride)) for v in (h, w))
    return out, f"median image {h:g}x{w:g}" + (f", scaled to at most {MAX_SIDE}" if scale < 1 else "")  # type: ignore[return-value]


def _pick(names: list[str], role: str) -> str | None:
    if role in names:
        return role
    hits = [n for n in names if any(word in n.lower() for word in _ROLES[role])]
    if role == "train":
        hits = [n for n in hits if "test" not in n.lower()]
    return hits[0] if len(hits) == 1 else None


def split_names(listed: list[str], where: str) -> tuple[dict[str, str], str]:
    """({train_split, val_split, test_split}, why) from the split lists a folder defines."""
    if not listed:
        return {"train_split": "train", "val_split": "val", "test_split": "test"}, "seeded"
    train = _pick(listed, "train")
    if train is None:
        raise DataError(f"{where}: cannot tell the training list among {', '.join(listed)}; set data.train_split")
    val, test = _pick(listed, "val"), _pick(listed, "test")
    why = f"lists {train}" + (f"/{val}" if val else " (val carved from it)") + (f"/{test}" if test else ", no test list")
    return {"train_split": train, "val_split": val or "val", "test_split": test or "test"}, why


def derive_data_settings(cfg: DataConfig, model: ModelConfig | None = None) -> DataConfig:
    """``cfg`` with every ``auto`` value derived from its folder (see the module docstring) and ``derived`` set."""
    keys = auto_keys(cfg)
    if not keys:
        return cfg
    if cfg.format not in ("image_folder", "pranet"):
        raise DataError(f"data.{keys[0]}: auto is derived only for 2D image folders (image_folder, pranet), "
                        f"not {cfg.format}; set it")
    reader = _reader(cfg)
    files = reader.files()
    images = [img for img, _ in files.values()]
    where = f"{cfg.root}"
    update: dict[str, Any] = {}
    said: list[str] = []
    if cfg.in_channels == AUTO:
        update["in_channels"], why = image_channels(images)
        said.append(f"in_channels {update['in_channels']} ({why})")
    channels = update.get("in_channels", cfg.in_channels)
    if cfg.num_classes == AUTO:
        update["num_classes"], why = mask_classes([m for _, m in files.values() if m is not None], where)
        said.append(f"num_classes {update['num_classes']} ({why})")
    if cfg.normalize.kind == AUTO:
        pretrained = bool((model.kwargs if model else {}).get("pretrained"))
        kind = "imagenet" if channels == 3 and pretrained else "zscore"
        update["normalize"] = cfg.normalize.model_copy(update={"kind": kind})
        said.append(f"normalize {kind} (" + ("RGB into a pretrained backbone" if kind == "imagenet"
                                              else "per image and channel") + ")")
    if cfg.size == AUTO:
        from medseg.catalog import read_catalog

        name = model.name if model else None
        stride = next((int(r["stride"]) for r in read_catalog() if r["name"] == name), 32)
        update["size"], why = median_size(images, stride)
        said.append(f"size {update['size'][0]}x{update['size'][1]} ({why})")
    split_keys = [k for k in ("train_split", "val_split", "test_split") if getattr(cfg, k) == AUTO]
    if split_keys:
        names, why = split_names(reader.listed_splits(), f"{cfg.root}/splits")
        update.update({k: names[k] for k in split_keys})
        said.append(f"splits {'/'.join(names[k] for k in split_keys)} ({why}" + (
            f", seed {cfg.split_seed})" if why == "seeded" else ")"))
    out = cfg.model_copy(update=update)
    if split_keys:
        final = _reader(out)
        known = final.splits()
        counts = "/".join(str(len(final.ids(getattr(out, k)))) if getattr(out, k) in known else "0" for k in split_keys)
        said[-1] += f" = {counts} images"
    line = f"derived from {len(files)} images: " + "; ".join(said)
    _log.info("%s", line)
    return out.model_copy(update={"derived": line})



def _reader(cfg: DataConfig) -> Any:
    """The folder's reader with masks optional and placeholder classes (only file names and split lists are used)."""
    from medseg.data.image_folder import ImageFolderReader, PraNetReader

    cls = PraNetReader if cfg.format == "pranet" else ImageFolderReader
    splits = {k: ("train", "val", "test")[i] if getattr(cfg, k) == AUTO else getattr(cfg, k)
              for i, k in enumerate(("train_split", "val_split", "test_split"))}
    return cls(cfg.root, image_dir=cfg.image_dir, mask_dir=cfg.mask_dir, num_classes=2, in_channels=1,
               train_split=splits["train_split"], val_split=splits["val_split"], split_seed=cfg.split_seed,
               val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, require_masks=False)
