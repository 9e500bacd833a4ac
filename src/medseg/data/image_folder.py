"""2D image/mask folders, and the PraNet polyp layout.

Image-folder layout (``format: image_folder``)::

    root/
      images/<id>.{png,jpg,jpeg,bmp,tif,tiff}     (folder name: data.image_dir)
      masks/<id>.<any of those>                    (folder name: data.mask_dir, e.g. masks_multiclass)
      splits/<split>.txt                           (optional; one id per line)

Images and masks are matched by file stem (a mask may also be named ``<id>_mask``, ``<id>_gt``,
``<id>_label`` or ``<id>_segmentation``). Decoding is Pillow's.

Images: 8-bit images are divided by 255 (16-bit by 65535; float TIFFs kept), giving float32
``[C, H, W]`` in [0, 1]. Channels are converted to ``in_channels``: grey -> RGB repeats the grey
channel; RGB -> grey is the ITU-R 601-2 luminance 0.299 R + 0.587 G + 0.114 B (as Pillow's
``convert("L")``, computed in float); alpha is dropped; palette images are expanded to RGB.

Masks:
- binary tasks (``num_classes == 2``): a mask whose values are all in {0, 1} is used as it is;
  otherwise a pixel is foreground where **any** channel is >= 128 (JPEG masks included: their
  compression noise never crosses 128). A mask with values above 1 but none >= 128 is refused (it
  looks like a label-index mask for another ``num_classes``).
- multi-class (``num_classes > 2``): the pixel values (palette indices for palette PNGs) are the
  class indices and must be < ``num_classes``; an RGB mask must have equal channels.

Splits, in this order:
1. a split given as a path to a text file (absolute, relative to the working directory or to the
   root), e.g. ``splits/pranet_test.txt``; its split name is the file's stem (``pranet_test``);
2. ``root/splits/<split>.txt``;
3. the validation split (``data.val_split``) when it has no file but the training split does: a
   seeded ``val_fraction`` of the training list is carved out, and the training split then returns
   the rest (so the two never overlap);
4. with no split files at all: a seeded random split ``train``/``val``/``test`` with fractions
   ``(1 - val_fraction - test_fraction, val_fraction, test_fraction)``;
5. ``all``: every image.
A split entry may carry an extension (``0.jpg``). An entry without an image is a :class:`DataError`
naming the list file.

PraNet layout (``format: pranet``, :class:`PraNetReader`)::

    root/TrainDataset/{images,masks}/             -> split "train"
    root/TestDataset/<set>/{images,masks}/        -> one split per set ("CVC-300", "Kvasir", ...)

Test-set case ids are ``<set>/<stem>`` (sets reuse file names); split ``test`` is the union of all
test sets (unless a set is itself named ``test``), and :meth:`PraNetReader.test_sets` names them
(``medseg evaluate --split test`` scores each set separately). Singular ``image``/``mask`` folders
are accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.data.base import Case, Reader, adapt_channels, check_label, read_list_file, seeded_split
from medseg.utils import DataError

if TYPE_CHECKING:
    from medseg.config import DataConfig

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = ("", "_mask", "_gt", "_label", "_segmentation")


def _open(path: Path, what: str):
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read {what} ({err})") from None
    return im


def _to_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if a.dtype.kind in "ui":
        return a.astype(np.float32) / np.float32(65535.0)
    return a.astype(np.float32)


def read_image(path: str | Path, in_channels: int) -> np.ndarray:
    """Decode an image file to float32 ``[in_channels, H, W]`` in [0, 1] (see the module docstring)."""
    path = Path(path)
    im = _open(path, "image")
    with im:
        mode = im.mode
        if mode in ("RGBA", "LA", "PA"):
            a = np.asarray(im)[..., :-1]
        elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
            a = np.asarray(im.convert("RGB"))
        elif mode == "1":
            a = np.asarray(im.convert("L"))
        else:  # L, RGB, I;16*, I, F
            a = np.asarray(im)
    if a.ndim == 2:
        a = a[None]
    else:
        a = np.moveaxis(a, -1, 0)
    return adapt_channels(_to_unit_float(a), in_channels, path, allow_luminance=True)


def read_mask(path: str | Path, num_classes: int) -> np.ndarray:
    """Decode a mask file to int64 ``[H, W]`` class indices (see the module docstring for the rules)."""
    path = Path(path)
    im = _open(path, "mask")
    with im:
        mode = im.mode
        if mode in ("RGBA", "LA", "PA"):
            a = np.asarray(im)[..., :-1]
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
            a = np.asarray(im.convert("RGB"))
        elif mode == "1":
            a = np.asarray(im).astype(np.uint8)
        else:  # P (palette indices), L, RGB, I;16*, I, F
            a = np.asarray(im)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if num_classes == 2:
        grey = a.max(axis=-1) if a.ndim == 3 else a
        if grey.size == 0:
            return grey.astype(np.int64)
        lo, hi = grey.min(), grey.max()
        if lo >= 0 and hi <= 1:
            return check_label(grey if grey.dtype.kind != "f" else (grey >= 0.5), 2, path)
        if hi >= 128:
            return (grey >= 128).astype(np.int64)
        raise DataError(
            f"{path}: binary mask has values up to {hi:g} but none >= 128 (neither {{0, 1}} nor {{0, 255}}); "
            "is it a label-index mask? set data.num_classes"
        )
    if a.ndim == 3:
        if not all(np.array_equal(a[..., 0], a[..., c]) for c in range(1, a.shape[-1])):
            raise DataError(
                f"{path}: colour mask with different channels; multi-class masks must hold class indices "
                "(grey or palette PNG)"
            )
        a = a[..., 0]
    return check_label(a, num_classes, path)


@dataclass(frozen=True)
class _Source:
    """One images/masks folder pair; its case ids are ``prefix + stem``."""

    prefix: str
    images: Path
    masks: Path | None


def _list_files(folder: Path) -> dict[str, Path]:
    """Stem -> file for the supported image files of ``folder`` (duplicate stems are an error)."""
    out: dict[str, Path] = {}
    with os.scandir(folder) as it:
        entries = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
    for name in entries:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in out:
            raise DataError(f"{folder}: two files for id {stem!r}: {out[stem].name} and {name}")
        out[stem] = folder / name
    return out


class ImageFolderReader(Reader):
    """2D ``images/`` + ``masks/`` folders matched by stem, with split lists or a seeded split."""

    format = "image_folder"

    def __init__(
        self,
        root: str | Path,
        *,
        image_dir: str = "images",
        mask_dir: str = "masks",
        num_classes: int = 2,
        in_channels: int = 1,
        class_names: Sequence[str] | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        require_masks: bool = True,
    ) -> None:
        super().__init__(root, num_classes=num_classes, in_channels=in_channels, class_names=class_names)
        self.image_dir = image_dir
        self.mask_dir = mask_dir
        self.train_split = train_split
        self.val_split = val_split
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.require_masks = require_masks
        self._index: dict[str, tuple[Path, Path | None]] = {}
        self._missing_masks: dict[str, Path] = {}  # id -> mask folder searched
        for src in self._sources():
            self._add_source(src)
        self._carved: tuple[list[str], list[str]] | None = None

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ImageFolderReader:
        return cls(
            cfg.root,
            image_dir=cfg.image_dir,
            mask_dir=cfg.mask_dir,
            test_fraction=cfg.test_fraction,
            **cls.config_kwargs(cfg),
        )

    # -- index --------------------------------------------------------------------------------
    def _sources(self) -> list[_Source]:
        images = self.root / self.image_dir
        if not images.is_dir():
            raise DataError(
                f"{self.root}: no {self.image_dir}/ folder (expected {self.image_dir}/ and {self.mask_dir}/ "
                "with files matched by name)"
            )
        masks = self.root / self.mask_dir
        if not masks.is_dir():
            if self.require_masks:
                raise DataError(f"{self.root}: no {self.mask_dir}/ folder next to {self.image_dir}/")
            masks = None
        return [_Source("", images, masks)]

    def _add_source(self, src: _Source) -> None:
        images = _list_files(src.images)
        if not images:
            raise DataError(f"{src.images}: empty folder: no images ({', '.join(IMAGE_EXTENSIONS)})")
        masks = _list_files(src.masks) if src.masks is not None else {}
        for stem, img in images.items():
            mask = next((masks[stem + s] for s in MASK_SUFFIXES if stem + s in masks), None)
            cid = src.prefix + stem
            self._index[cid] = (img, mask)
            if mask is None and src.masks is not None:
                self._missing_masks[cid] = src.masks

    def _check_ids(self, ids: list[str]) -> list[str]:
        if self.require_masks:
            for cid in ids:
                if cid in self._missing_masks:
                    img = self._index[cid][0]
                    raise DataError(
                        f"{img}: missing mask: no file {Path(img).stem}.* in {self._missing_masks[cid]}"
                    )
        return ids

    # -- splits -------------------------------------------------------------------------------
    def _listed(self) -> dict[str, list[str] | Path]:
        """Named splits defined by the data (here: ``splits/*.txt``)."""
        folder = self.root / "splits"
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.txt"))}

    def _resolve_list(self, path: Path) -> list[str]:
        out = []
        for entry in read_list_file(path):
            if entry in self._index:
                out.append(entry)
                continue
            stem = Path(entry).stem if Path(entry).suffix.lower() in IMAGE_EXTENSIONS else None
            if stem is not None and stem in self._index:
                out.append(stem)
                continue
            folders = sorted({str(p.parent) for p, _ in self._index.values()})
            raise DataError(f"{path}: unknown id {entry!r}: no image for it in {', '.join(folders)}")
        return out

    def _find(self, split: str) -> tuple[str, list[str] | Path] | None:
        """(key, source) of a listed split or a split-file path, without reading it; None if neither."""
        listed = self._listed()
        if split in listed:
            src = listed[split]
            return (str(src.resolve()) if isinstance(src, Path) else split), src
        if split.endswith(".txt") or "/" in split or os.sep in split:
            for p in (Path(split), self.root / split):
                if p.is_file():
                    return str(p.resolve()), p
        return None

    def _read_source(self, src: list[str] | Path) -> list[str]:
        return self._resolve_list(src) if isinstance(src, Path) else list(src)

    def _carving(self) -> bool:
        """True when ``val_split`` is carved out of the training split (see the module docstring)."""
        return (
            self.val_split is not None
            and self._find(self.val_split) is None
            and self._find(self.train_split) is not None
        )

    def _carve(self) -> tuple[list[str], list[str]]:
        if self._carved is None:
            train = self._read_source(self._find(self.train_split)[1])  # type: ignore[index]
            parts = seeded_split(
                train, (1 - self.val_fraction, self.val_fraction), self.split_seed, ("train", "val")
            )
            keep = set(parts["val"])
            self._carved = ([i for i in train if i not in keep], [i for i in train if i in keep])
            logger.info(
                "%s: no %r split list; carved %d of %d %r ids (seed %d)",
                self.root,
                self.val_split,
                len(keep),
                len(train),
                self.train_split,
                self.split_seed,
            )
        return self._carved

    def _seeded(self) -> dict[str, list[str]] | None:
        if self._listed():
            return None
        fractions = (1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)
        return seeded_split(sorted(self._index), fractions, self.split_seed)

    def splits(self) -> list[str]:
        names = list(self._listed())
        if self._carving():
            names.append(str(self.val_split))
        seeded = self._seeded()
        if seeded is not None:
            names += [n for n in seeded if n not in names]
        if "all" not in names:
            names.append("all")
        return names

    def _split_ids(self, split: str) -> list[str] | None:
        found = self._find(split)
        if found is not None:
            key, src = found
            if self._carving() and key == self._find(self.train_split)[0]:  # type: ignore[index]
                return self._check_ids(self._carve()[0])
            return self._check_ids(self._read_source(src))
        if split == self.val_split and self._carving():
            return self._check_ids(self._carve()[1])
        seeded = self._seeded()
        if seeded is not None and split in seeded:
            return self._check_ids(seeded[split])
        if split == "all":
            return self._check_ids(sorted(self._index))
        return None

    def listed_splits(self) -> list[str]:
        """Names of the splits the data defines (``splits/*.txt``; PraNet: ``train`` and the test sets)."""
        return list(self._listed())

    # -- cases --------------------------------------------------------------------------------
    def files(self) -> dict[str, tuple[Path, Path | None]]:
        """Every case id -> (image file, mask file or None), in id order."""
        return dict(sorted(self._index.items()))

    def paths(self, case_id: str) -> tuple[Path, Path | None]:
        """(image file, mask file or None) of a case."""
        try:
            return self._index[case_id]
        except KeyError:
            raise DataError(f"{self.root}: unknown case id {case_id!r}") from None

    def load(self, case_id: str) -> Case:
        img_path, mask_path = self.paths(case_id)
        image = read_image(img_path, self.in_channels)
        label = None
        if mask_path is not None:
            label = read_mask(mask_path, self.num_classes)
            if label.shape != image.shape[-2:]:
                raise DataError(
                    f"{mask_path}: mask size {label.shape[1]}x{label.shape[0]} differs from image {img_path} "
                    f"size {image.shape[2]}x{image.shape[1]} (W x H)"
                )
        elif self.require_masks:
            raise DataError(
                f"{img_path}: missing mask: no file {img_path.stem}.* in {self.root / self.mask_dir}"
            )
        meta = {
            "image_path": str(img_path),
            "mask_path": None if mask_path is None else str(mask_path),
            "orig_size": tuple(int(s) for s in image.shape[-2:]),
        }
        return Case(id=case_id, image=image, label=label, spacing=None, meta=meta)


class PraNetReader(ImageFolderReader):
    """PraNet layout: ``TrainDataset/`` (split ``train``) and ``TestDataset/<set>/`` (one split per set)."""

    format = "pranet"

    def _pick(self, folder: Path, name: str, singular: str) -> Path:
        for cand in (name, singular):
            if (folder / cand).is_dir():
                return folder / cand
        return folder / name

    def _sources(self) -> list[_Source]:
        train = self.root / "TrainDataset"
        test = self.root / "TestDataset"
        if not train.is_dir() and not test.is_dir():
            raise DataError(f"{self.root}: not a PraNet layout: no TrainDataset/ or TestDataset/ folder")
        sources: list[_Source] = []
        self._sets: dict[str, str] = {}  # split name -> id prefix
        folders = [("train", "", train)] if train.is_dir() else []
        if test.is_dir():
            folders += [(p.name, p.name + "/", p) for p in sorted(test.iterdir()) if p.is_dir()]
        for name, prefix, folder in folders:
            images = self._pick(folder, self.image_dir, "image")
            masks = self._pick(folder, self.mask_dir, "mask")
            if not images.is_dir():
                raise DataError(f"{folder}: no {self.image_dir}/ folder")
            if not masks.is_dir():
                if self.require_masks:
                    raise DataError(f"{folder}: no {self.mask_dir}/ folder")
                masks = None  # type: ignore[assignment]
            sources.append(_Source(prefix, images, masks))
            self._sets[name] = prefix
        return sources

    def test_sets(self) -> list[str]:
        """Names of the ``TestDataset/<set>`` folders (each one a split), in name order."""
        return [name for name, prefix in self._sets.items() if prefix]

    def _listed(self) -> dict[str, list[str] | Path]:
        out: dict[str, list[str] | Path] = {}
        for name, prefix in self._sets.items():
            if prefix:
                out[name] = sorted(i for i in self._index if i.startswith(prefix))
            else:
                out[name] = sorted(i for i in self._index if "/" not in i)
        test_sets = self.test_sets()
        if test_sets and "test" not in out:
            out["test"] = [i for n in test_sets for i in out[n]]  # type: ignore[union-attr]
        return out
