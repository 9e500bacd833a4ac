"""TransUNet (Synapse), CASCADE (ACDC npz) and SSL4MIS (ACDC h5) preprocessed formats.

Files (keys ``image`` — or CASCADE's ``img`` — and ``label``):

- 2D slices ``H x W``: Synapse ``train_npz/case0005_slice012.npz``; SSL4MIS ACDC
  ``data/patient001_frame01_slice_1.h5`` (or ``data/slices/``); CASCADE ``train/*.npz``.
- 3D volumes ``D x H x W`` (D = axial slices): Synapse ``test_vol_h5/case0001.npy.h5``; SSL4MIS
  ``data/patient001_frame01.h5``; CASCADE ``test/*.npz``.

Split lists are text files of entries, one per line; the split name is the file stem:
``lists/lists_Synapse/{train,test_vol}.txt`` (also ``lists/``, ``lists_ACDC/`` or the root, ``.txt``
or ``.list``), SSL4MIS ``train_slices.list``, ``train.list``, ``val.list``, ``test.list``. A split
can also be given as a path to a list file. Aliases: ``train`` -> ``train_slices`` when that list
exists (as SSL4MIS's ``BaseDataSets(split="train")``, which trains on slices; the volume list stays
reachable as ``train.list``), ``test`` -> ``test_vol`` and ``val`` <-> ``valid`` when only the
other exists. When the validation split has no list but the training one
does, a seeded ``val_fraction`` of the training *volumes* is carved out (slices of one volume stay
together: an entry ``<volume>_slice<N>`` / ``<volume>_slice_<N>`` belongs to ``<volume>``).

An entry names a file by its stem in any of the data folders (``""``, ``train_npz``,
``test_vol_h5``, ``data``, ``data/slices``, ``train``, ``valid``, ``val``, ``test``), e.g.
``case0005_slice012`` -> ``train_npz/case0005_slice012.npz``, ``patient001_frame01`` ->
``data/patient001_frame01.h5``, ``case0001`` -> ``test_vol_h5/case0001.npy.h5``. Whether a case is a
2D slice or a volume comes from the file's ``image`` shape (read from the header only).

Intensities are returned **as stored**: ACDC h5 in [0, 1]; TransUNet's Synapse files are already
windowed to [0, 1]; raw Synapse HU (``int16``/``float``) flow through unchanged — window them with
``NormalizeConfig(kind="window", window=(-125, 275))``, which maps (x + 125) / 400 clipped to [0, 1].
Labels (stored as float in Synapse npz) must be integral and < ``num_classes``. No spacing is stored.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.data.base import Case, Reader, adapt_channels, check_label, read_list_file, seeded_split
from medseg.utils import DataError

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SYNAPSE_CLASSES = [
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "pancreas",
    "liver",
    "stomach",
    "aorta",
]
ACDC_CLASSES = ["background", "RV", "Myo", "LV"]

DATA_DIRS = ("", "train_npz", "test_vol_h5", "data", "data/slices", "train", "valid", "val", "test")
LIST_DIRS = ("lists/lists_Synapse", "lists/lists_ACDC", "lists_Synapse", "lists_ACDC", "lists", "")
DATA_EXTENSIONS = (".npy.h5", ".h5", ".npz")
IMAGE_KEYS = ("image", "img")
LABEL_KEYS = ("label", "mask", "gt")
_SLICE_RE = re.compile(r"^(?P<volume>.+?)_slice_?\d+$")


def _strip_ext(name: str) -> str | None:
    for ext in DATA_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def volume_of(entry: str) -> str:
    """The volume an entry belongs to: ``case0005_slice012`` -> ``case0005``; a volume is its own."""
    m = _SLICE_RE.match(entry)
    return m.group("volume") if m else entry


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an ``.npz`` without decompressing the arrays (header only)."""
    out: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            out[name[:-4]] = tuple(shape)
    return out


def _pick(keys: Sequence[str], wanted: Sequence[str]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def read_arrays(path: Path, index: int | None = None, *, image: bool = True) -> tuple[Any, Any]:
    """(image, label or None) arrays of an npz/h5 file; one slice of a volume when ``index`` is given."""
    sel = slice(None) if index is None else index
    try:
        if path.name.endswith(".npz"):
            with np.load(path) as z:
                ik, lk = _pick(z.files, IMAGE_KEYS), _pick(z.files, LABEL_KEYS)
                if ik is None:
                    raise DataError(f"{path}: no 'image' (or 'img') array; keys: {', '.join(z.files)}")
                img = np.asarray(z[ik])[sel] if image else None
                lab = None if lk is None else np.asarray(z[lk])[sel]
        else:
            import h5py

            with h5py.File(path, "r") as h:
                keys = list(h.keys())
                ik, lk = _pick(keys, IMAGE_KEYS), _pick(keys, LABEL_KEYS)
                if ik is None:
                    raise DataError(f"{path}: no 'image' (or 'img') dataset; keys: {', '.join(keys)}")
                img = h[ik][sel] if image else None
                lab = None if lk is None else h[lk][sel]
    except DataError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    return img, lab


def _make_case(
    case_id: str,
    img: np.ndarray,
    lab: np.ndarray | None,
    p: Path,
    index: int | None,
    num_classes: int | None,
    in_channels: int,
) -> Case:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise DataError(f"{p}: image has shape {img.shape}; expected H x W (slice) or D x H x W (volume)")
    if lab is not None and lab.shape != img.shape:
        raise DataError(f"{p}: label shape {lab.shape} differs from image shape {img.shape}")
    image = adapt_channels(img.astype(np.float32, copy=False)[None], in_channels, p, allow_luminance=False)
    label = None if lab is None else check_label(np.asarray(lab), num_classes, p)
    meta: dict[str, Any] = {"image_path": str(p), "orig_size": tuple(int(s) for s in img.shape[-2:])}
    if index is not None:
        meta["slice"] = int(index)
    return Case(id=case_id, image=image, label=label, spacing=None, meta=meta)


def load_volume_file(path: str | Path, num_classes: int | None = None, in_channels: int = 1) -> Case:
    """Read one TransUNet/SSL4MIS file (``.npz``, ``.h5``, ``.npy.h5``; slice or volume) outside a data set.

    The case id is the file name without its extension; the label (if stored) is range-checked when
    ``num_classes`` is given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    img, lab = read_arrays(path)
    return _make_case(_strip_ext(path.name) or path.stem, img, lab, path, None, num_classes, in_channels)


class TransUNetReader(Reader):
    """Synapse/ACDC slices (npz/h5) and volumes (npy.h5/h5/npz) with TransUNet/SSL4MIS list files."""

    format = "transunet"
    random_slice_access = True

    def __init__(
        self,
        root: str | Path,
        *,
        num_classes: int = 9,
        in_channels: int = 1,
        class_names: Sequence[str] | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        split_seed: int = 0,
        val_fraction: float = 0.1,
    ) -> None:
        if not class_names:
            class_names = {9: SYNAPSE_CLASSES, 4: ACDC_CLASSES}.get(num_classes)
        super().__init__(root, num_classes=num_classes, in_channels=in_channels, class_names=class_names)
        self.train_split = train_split
        self.val_split = val_split
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self._files: dict[str, Path] = {}
        for sub in DATA_DIRS:
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                stem = _strip_ext(p.name)
                if stem is not None and stem not in self._files and p.is_file():
                    self._files[stem] = p
        self._lists: dict[str, Path] = {}
        for sub in LIST_DIRS:
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.suffix in (".txt", ".list") and p.is_file():
                    self._lists.setdefault(p.stem, p)
        if not self._files:
            raise DataError(
                f"{self.root}: empty folder: no .npz/.h5/.npy.h5 files in {', '.join(d or '.' for d in DATA_DIRS)}"
            )
        self._shapes: dict[str, tuple[int, ...]] = {}

    # -- splits -------------------------------------------------------------------------------
    def _list_path(self, split: str) -> Path | None:
        # SSL4MIS: split "train" reads train_slices.list
        if split == "train" and "train_slices" in self._lists:
            return self._lists["train_slices"]
        if split in self._lists:
            return self._lists[split]
        alias = {"test": "test_vol", "val": "valid", "valid": "val"}.get(split)
        if alias in self._lists:
            return self._lists[alias]
        if split.endswith((".txt", ".list")) or "/" in split:
            for p in (Path(split), self.root / split):
                if p.is_file():
                    return p
        return None

    def _resolve(self, path: Path) -> list[str]:
        out = []
        for entry in read_list_file(path):
            name = Path(entry).name
            stem = _strip_ext(name) or name
            if stem not in self._files:
                hint = ""
                if f"{path.stem}_slices" in self._lists:
                    hint = f" (the data may be stored as slices: try split '{path.stem}_slices')"
                raise DataError(
                    f"{path}: unknown id {entry!r}: no {stem}.npz/.h5/.npy.h5 in "
                    f"{', '.join(str(self.root / d) for d in DATA_DIRS if (self.root / d).is_dir())}{hint}"
                )
            out.append(stem)
        return out

    def _carving(self) -> bool:
        return (
            self.val_split is not None
            and self._list_path(self.val_split) is None
            and self._list_path(self.train_split) is not None
        )

    def _carve(self) -> tuple[list[str], list[str]]:
        train = self._resolve(self._list_path(self.train_split))  # type: ignore[arg-type]
        volumes = sorted({volume_of(e) for e in train})
        parts = seeded_split(
            volumes, (1 - self.val_fraction, self.val_fraction), self.split_seed, ("train", "val")
        )
        val = set(parts["val"])
        return [e for e in train if volume_of(e) not in val], [e for e in train if volume_of(e) in val]

    def cv_pool(self) -> list[str]:
        """The training list before the validation carve-out (a validation list of the data's own stays out)."""
        if self._carving():
            return self._resolve(self._list_path(self.train_split))  # type: ignore[arg-type]
        return self._split_ids(self.train_split) or []

    def splits(self) -> list[str]:
        names = list(self._lists)
        if self._carving():
            names.append(str(self.val_split))
        return names

    def _split_ids(self, split: str) -> list[str] | None:
        path = self._list_path(split)
        if path is not None:
            if self._carving() and path == self._list_path(self.train_split):
                return self._carve()[0]
            return self._resolve(path)
        if split == self.val_split and self._carving():
            return self._carve()[1]
        return None

    # -- files --------------------------------------------------------------------------------
    def path(self, case_id: str) -> Path:
        """The file of a case id."""
        try:
            return self._files[case_id]
        except KeyError:
            raise DataError(
                f"{self.root}: unknown case id {case_id!r}: no {case_id}.npz/.h5/.npy.h5"
            ) from None

    def _image_shape(self, case_id: str) -> tuple[int, ...]:
        if case_id not in self._shapes:
            p = self.path(case_id)
            try:
                if p.name.endswith(".npz"):
                    shapes = _npz_shapes(p)
                else:
                    import h5py

                    with h5py.File(p, "r") as h:
                        shapes = {k: tuple(h[k].shape) for k in h.keys() if hasattr(h[k], "shape")}
            except (OSError, zipfile.BadZipFile, ValueError) as err:
                raise DataError(f"{p}: cannot read ({err})") from None
            key = _pick(list(shapes), IMAGE_KEYS)
            if key is None:
                raise DataError(f"{p}: no 'image' (or 'img') array; keys: {', '.join(shapes) or 'none'}")
            self._shapes[case_id] = shapes[key]
        return self._shapes[case_id]

    def _read(self, case_id: str, index: int | None = None, *, image: bool = True) -> tuple[Any, Any, Path]:
        p = self.path(case_id)
        img, lab = read_arrays(p, index, image=image)
        return img, lab, p

    def _case(
        self, case_id: str, img: np.ndarray, lab: np.ndarray | None, p: Path, index: int | None
    ) -> Case:
        return _make_case(case_id, img, lab, p, index, self.num_classes, self.in_channels)

    # -- Reader API ---------------------------------------------------------------------------
    def num_slices(self, case_id: str) -> int | None:
        shape = self._image_shape(case_id)
        return int(shape[0]) if len(shape) == 3 else None

    def load(self, case_id: str) -> Case:
        img, lab, p = self._read(case_id)
        return self._case(case_id, np.asarray(img), lab, p, None)

    def load_slice(self, case_id: str, index: int) -> Case:
        d = self.num_slices(case_id)
        if d is None:
            raise DataError(f"{self.path(case_id)}: case {case_id} is a 2D slice; it has no slice {index}")
        if not 0 <= index < d:
            raise DataError(f"{self.path(case_id)}: slice {index} out of range 0..{d - 1}")
        img, lab, p = self._read(case_id, index)
        return self._case(case_id, np.asarray(img), lab, p, index)

    def foreground_slices(self, case_id: str) -> np.ndarray | None:
        if self.num_slices(case_id) is None:
            return None
        _, lab, p = self._read(case_id, image=False)
        if lab is None:
            return None
        lab = np.asarray(lab)
        return lab.reshape(lab.shape[0], -1).any(axis=1)
