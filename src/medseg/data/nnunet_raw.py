"""NIfTI volumes in the nnU-Net v2 / Medical Segmentation Decathlon raw layout.

Layout::

    root/
      dataset.json
      imagesTr/<case>_0000.nii.gz [, <case>_0001.nii.gz, ...]   one file per channel (_XXXX suffix)
      labelsTr/<case>.nii.gz
      imagesTs/<case>_0000.nii.gz                               (optional; split "imagesTs")
      labelsTs/<case>.nii.gz                                    (optional)
      splits_final.json | splits.json | splits/<split>.txt      (optional)

``dataset.json``: nnU-Net v2 (``channel_names``, ``labels`` name -> int, ``file_ending``) or MSD /
nnU-Net v1 (``modality``, ``labels`` int -> name, ``training``). Files without a ``_XXXX`` channel
suffix (MSD raw) are single-file cases; a 4D file ``(X, Y, Z, C)`` holds the channels. The labels
must be 0..K-1 and K must equal ``num_classes`` (region-based labels are not supported).

Orientation: nibabel returns voxel arrays ``(i, j, k)`` in the file's storage order. The slice axis
``D`` is the voxel axis whose orientation code (``nibabel.aff2axcodes``) is ``S`` or ``I``, so slices
are axial whatever the layout: ``(X, Y, Z)`` files (L-P-S, R-A-S) and KiTS19's ``(slices, 512, 512)``
files (``('I', 'P', 'L')``) alike; without such an axis (no or a degenerate affine, 2D files) it is
the last one, ``k``. The other two axes keep SimpleITK's (reversed) order, ``H`` then ``W``: a
``(X, Y, Z)`` file becomes ``(Z, Y, X)``, the array order of SimpleITK and nnU-Net. The data is
only transposed (:func:`slice_axes` gives the permutation): no flips, reorientation or resampling.
``spacing`` is the header zooms in the same array order ``(D, H, W)``. ``meta`` keeps the affine,
header and permutation (``axes``), so :func:`write_like` writes a prediction ``[D, H, W]`` back in
the input's array layout and voxel grid (:func:`to_nifti_array` is the inverse transpose). Images
are raw intensities (CT in HU, scale/slope applied) as float32 — window or z-score them with the
normalisation transform.

Splits: ``splits_final.json`` / ``splits.json`` (nnU-Net's list of folds ``[{"train": [...], "val":
[...]}, ...]`` -> fold ``fold`` gives ``train``/``val``; or a mapping ``{"train": [...], ...}``), then
``splits/<split>.txt``; when the validation split is missing but the training one exists, a seeded
``val_fraction`` of its cases is carved out; with no split definition at all, a seeded split by case
of the ``imagesTr`` cases with ``fractions`` (default 70/10/20, as the MDA-U-Net paper). ``imagesTs``
and ``all`` (every ``imagesTr`` case) are always available.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.data.base import Case, Reader, adapt_channels, check_label, read_list_file, seeded_split
from medseg.utils import DataError, atomic_write

if TYPE_CHECKING:
    from medseg.config import DataConfig

logger = logging.getLogger(__name__)

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


#: ``(D, H, W)`` from nibabel's ``(X, Y, Z)`` when the affine names no axial axis.
DEFAULT_AXES: tuple[int, int, int] = (2, 1, 0)


def slice_axes(affine: np.ndarray | None, ndim: int = 3) -> tuple[int, int, int]:
    """The voxel axes that become ``(D, H, W)``: ``D`` is the S/I axis of ``affine``, then reversed order.

    ``(X, Y, Z)`` with ``Z`` axial -> ``(2, 1, 0)``; KiTS19's ``('I', 'P', 'L')`` -> ``(0, 2, 1)``.
    Arrays with fewer than 3 axes, or affines without exactly one S/I axis, get :data:`DEFAULT_AXES`.
    """
    if affine is None or ndim < 3:
        return DEFAULT_AXES
    import nibabel as nib

    codes = nib.aff2axcodes(np.asarray(affine))
    axial = [i for i, c in enumerate(codes[:3]) if c in ("S", "I")]
    if len(axial) != 1:
        logger.warning("affine orientation %s has no single S/I axis: slicing along the last axis", codes)
        return DEFAULT_AXES
    d = axial[0]
    return (d, *(i for i in (2, 1, 0) if i != d))


def _inverse(axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(axes))


def to_nifti_array(pred_dhw: np.ndarray, axes: Sequence[int] = DEFAULT_AXES) -> np.ndarray:
    """``[D, H, W]`` -> the NIfTI voxel array whose :func:`slice_axes` are ``axes`` (inverse transpose)."""
    pred_dhw = np.asarray(pred_dhw)
    if pred_dhw.ndim != 3:
        raise ValueError(f"expected a [D, H, W] volume, got shape {pred_dhw.shape}")
    return np.ascontiguousarray(pred_dhw.transpose(_inverse(axes)))


def from_nifti_array(xyz: np.ndarray, axes: Sequence[int] = DEFAULT_AXES) -> np.ndarray:
    """A NIfTI voxel array ``(i, j, k[, C])`` -> ``[D, H, W]`` (or ``[C, D, H, W]``) by :func:`slice_axes`."""
    xyz = np.asarray(xyz)
    if xyz.ndim == 2:
        xyz = xyz[..., None]
    if xyz.ndim == 3:
        return xyz.transpose(tuple(axes))
    if xyz.ndim == 4:
        return xyz.transpose(3, *axes)
    raise ValueError(f"expected a 2D, 3D or 4D NIfTI array, got shape {xyz.shape}")


def _nifti_ending(name: str) -> str | None:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return ending
    return None


def split_channel(name: str) -> tuple[str, int | None]:
    """A NIfTI file name -> (case id, channel): ``case_00001_0000.nii.gz`` -> ``("case_00001", 0)``.

    Names without an nnU-Net ``_XXXX`` channel suffix give ``(name without extension, None)``.
    """
    ending = _nifti_ending(name)
    stem = name[: -len(ending)] if ending else name
    m = _CHANNEL_RE.match(stem)
    return (m.group("case"), int(m.group("channel"))) if m else (stem, None)


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise DataError(f"{path}: cannot read NIfTI ({err})") from None


def _read_label(
    path: Path, shape_xyz: tuple[int, ...] | None, num_classes: int | None, axes: Sequence[int]
) -> np.ndarray:
    """A label NIfTI as int64 ``[D, H, W]`` in the image's ``axes`` (checked: image shape, class range)."""
    img = _load_nifti(path)
    try:
        lab = np.asanyarray(img.dataobj)
    except Exception as err:
        raise DataError(f"{path}: cannot read NIfTI data ({err})") from None
    if lab.ndim == 4 and lab.shape[3] == 1:
        lab = lab[..., 0]
    if lab.ndim > 3:
        raise DataError(f"{path}: label has shape {lab.shape}; a label map has 3 axes (one class index per voxel)")
    if shape_xyz is not None and tuple(lab.shape) != tuple(shape_xyz[:3]):
        raise DataError(f"{path}: label shape {lab.shape} differs from the image shape {tuple(shape_xyz)}")
    return from_nifti_array(check_label(lab, num_classes, path), axes)


def _load_case(
    case_id: str,
    files: Sequence[Path],
    lab_path: Path | None,
    num_classes: int | None,
    in_channels: int | None,
) -> Case:
    channels = []
    first = None
    axes = DEFAULT_AXES
    for p in files:
        img = _load_nifti(p)
        try:
            arr = img.get_fdata(dtype=np.float32)
        except Exception as err:
            raise DataError(f"{p}: cannot read NIfTI data ({err})") from None
        if 0 in arr.shape:
            raise DataError(f"{p}: empty image: shape {arr.shape} has a 0-length axis")
        if first is None:
            first = img
            axes = slice_axes(img.affine, arr.ndim)
        elif arr.shape[:3] != first.shape[:3]:
            raise DataError(f"{p}: shape {arr.shape} differs from {Path(files[0]).name} {first.shape}")
        vol = from_nifti_array(arr, axes)
        channels.extend([vol] if vol.ndim == 3 else list(vol))
    if first is None:
        raise DataError(f"case {case_id}: no image files")
    image = np.ascontiguousarray(np.stack(channels).astype(np.float32, copy=False))
    if in_channels is not None:
        image = adapt_channels(image, in_channels, files[0], allow_luminance=False)
    shape_xyz = tuple(int(s) for s in first.shape[:3]) if len(first.shape) >= 3 else None
    label = None
    if lab_path is not None:
        label = np.ascontiguousarray(_read_label(lab_path, shape_xyz, num_classes, axes))
    zooms = tuple(float(z) for z in first.header.get_zooms()[:3])
    spacing = tuple(zooms[a] for a in axes) if len(zooms) == 3 else None
    meta = {
        "image_paths": [str(p) for p in files],
        "image_path": str(files[0]),
        "label_path": None if lab_path is None else str(lab_path),
        "affine": np.asarray(first.affine),
        "header": first.header.copy(),
        "shape_xyz": tuple(int(s) for s in first.shape),
        "axes": axes,
        "orig_size": tuple(int(s) for s in image.shape[-2:]),
    }
    return Case(id=case_id, image=image, label=label, spacing=spacing, meta=meta)


def load_nifti_case(
    path: str | Path,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    label_path: str | Path | None = None,
) -> Case:
    """Read one NIfTI image outside a data set as a :class:`Case` ``[C, D, H, W]`` (orientation as above).

    A file named ``<case>_0000<ending>`` pulls in its sibling channel files ``_0001``, ... (nnU-Net
    layout); the case id is the name without channel suffix and extension. ``in_channels`` (repeat a
    single channel) and ``num_classes`` (check the label range) are optional.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    ending = _nifti_ending(path.name)
    if ending is None:
        raise DataError(f"{path}: not a NIfTI file (.nii.gz / .nii)")
    stem, channel = split_channel(path.name)
    if channel not in (0, None):
        stem = path.name[: -len(ending)]
    files = [path]
    if channel == 0:
        c = 1
        while (path.parent / f"{stem}_{c:04d}{ending}").is_file():
            files.append(path.parent / f"{stem}_{c:04d}{ending}")
            c += 1
    return _load_case(stem, files, None if label_path is None else Path(label_path), num_classes, in_channels)


def write_array_nifti(
    labels_dhw: np.ndarray, path: str | Path, spacing: Sequence[float] | None = None
) -> Path:
    """Write a ``[D, H, W]`` volume without a reference image, atomically.

    The affine is ``diag(x, y, z spacing)`` (``spacing`` is in array order ``(z, y, x)``; 1 mm when
    ``None``; a 2-value in-plane spacing gets 1 mm between slices), origin 0, qform/sform code 1.
    """
    import nibabel as nib

    path = Path(path)
    if _nifti_ending(path.name) is None:
        raise ValueError(f"{path}: a NIfTI output must end in .nii.gz or .nii")
    arr = to_nifti_array(np.asarray(labels_dhw))
    sp = tuple(float(v) for v in spacing) if spacing else (1.0, 1.0, 1.0)
    if len(sp) == 2:
        sp = (1.0, *sp)
    if len(sp) != 3:
        raise ValueError(f"spacing must have 3 values (z, y, x), got {spacing}")
    affine = np.diag([sp[2], sp[1], sp[0], 1.0])
    dtype = np.uint8 if arr.size == 0 or (arr.min() >= 0 and arr.max() < 256) else np.int16
    img = nib.Nifti1Image(arr.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    return atomic_write(path, lambda fh: fh.write(data))


def write_like(pred_dhw: np.ndarray, reference: Case | str | Path, path: str | Path) -> Path:
    """Write a label volume ``[D, H, W]`` as NIfTI with the reference's affine and header, atomically.

    ``reference`` is a :class:`Case` from :class:`NnUNetRawReader` (``meta["affine"]``/``["header"]``/``["axes"]``)
    or the path of the input NIfTI; the labels are put back in the reference's array layout (the inverse of
    :func:`slice_axes`), so the file's shape and affine equal the input's. The data type is uint8 (int16 beyond 255 labels) without scaling.
    ``path`` must end in ``.nii.gz`` (gzip-compressed) or ``.nii``; the file is written to a temporary
    name next to it and renamed.
    """
    import nibabel as nib

    path = Path(path)
    if _nifti_ending(path.name) is None:
        raise ValueError(f"{path}: a NIfTI output must end in .nii.gz or .nii")
    if isinstance(reference, Case):
        if "affine" not in reference.meta or "header" not in reference.meta:
            raise ValueError(f"case {reference.id} has no NIfTI affine/header in meta (not read from NIfTI)")
        affine, header = reference.meta["affine"], reference.meta["header"]
        axes = reference.meta.get("axes")
    else:
        try:
            ref = nib.load(str(reference))
        except Exception as err:  # nibabel raises several types
            raise DataError(f"{reference}: cannot read NIfTI ({err})") from None
        affine, header, axes = ref.affine, ref.header, None
    ref_shape = tuple(int(s) for s in header.get_data_shape()[:3])
    axes = tuple(axes) if axes is not None else slice_axes(affine, len(ref_shape))
    arr = to_nifti_array(np.asarray(pred_dhw), axes)
    if arr.shape != ref_shape:
        raise ValueError(
            f"{path}: prediction shape {tuple(np.asarray(pred_dhw).shape)} (D, H, W) does not match the reference "
            f"volume {tuple(ref_shape[a] for a in axes) if len(ref_shape) == 3 else ref_shape} (D, H, W)"
        )
    dtype = np.uint8 if arr.size == 0 or (arr.min() >= 0 and arr.max() < 256) else np.int16
    hdr = header.copy()
    hdr.set_data_dtype(dtype)
    cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(arr.astype(dtype), affine, header=hdr)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(header.get_qform(), code=int(header["qform_code"]))
    img.set_sform(header.get_sform(), code=int(header["sform_code"]))
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    return atomic_write(path, lambda fh: fh.write(data))


class NnUNetRawReader(Reader):
    """NIfTI volumes (``imagesTr``/``labelsTr``/``imagesTs``) returned as ``[C, D, H, W]``."""

    format = "nnunet_raw"

    def __init__(
        self,
        root: str | Path,
        *,
        num_classes: int = 2,
        in_channels: int = 1,
        class_names: Sequence[str] | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        split_seed: int = 0,
        val_fraction: float | None = None,
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        fold: int = 0,
    ) -> None:
        root = Path(root)
        self.dataset_json = self._read_dataset_json(root)
        labels = self._labels(root, self.dataset_json)
        if labels is not None:
            if len(labels) != num_classes:
                raise DataError(
                    f"{root / 'dataset.json'}: {len(labels)} labels ({', '.join(labels)}) but data.num_classes is "
                    f"{num_classes}"
                )
            class_names = class_names or labels
        super().__init__(root, num_classes=num_classes, in_channels=in_channels, class_names=class_names)
        self.file_ending = str(self.dataset_json.get("file_ending", ".nii.gz"))
        if _nifti_ending(self.file_ending) is None:
            raise DataError(
                f"{root / 'dataset.json'}: file_ending {self.file_ending!r} is not NIfTI (.nii.gz/.nii)"
            )
        chans = self.dataset_json.get("channel_names") or self.dataset_json.get("modality")
        self.channel_names = [str(chans[k]) for k in sorted(chans, key=int)] if chans else None
        self.train_split = train_split
        self.val_split = val_split
        self.split_seed = split_seed
        self.fractions = tuple(fractions)
        if val_fraction is not None:  # the config's val_fraction replaces the middle fraction
            self.fractions = (1 - val_fraction - self.fractions[2], val_fraction, self.fractions[2])
        self.fold = fold
        self._cases: dict[str, tuple[list[Path], Path | None]] = {}
        self._ts: list[str] = []
        if not (root / "imagesTr").is_dir() and not (root / "imagesTs").is_dir():
            raise DataError(f"{root}: not an nnU-Net raw folder: no imagesTr/ or imagesTs/")
        self._tr = self._scan(root / "imagesTr", root / "labelsTr", required_labels=True)
        if (root / "imagesTs").is_dir():
            self._ts = self._scan(root / "imagesTs", root / "labelsTs", required_labels=False)
        if not self._cases:
            raise DataError(f"{root / 'imagesTr'}: empty folder: no *{self.file_ending} images")
        self._table = self._build_splits()

    @classmethod
    def from_config(cls, cfg: DataConfig) -> NnUNetRawReader:
        return cls(
            cfg.root,
            **cls.config_kwargs(cfg),
            fractions=(1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction),
            fold=cfg.fold,
        )

    # -- dataset.json -------------------------------------------------------------------------
    @staticmethod
    def _read_dataset_json(root: Path) -> dict[str, Any]:
        p = root / "dataset.json"
        if not p.is_file():
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{p}: cannot read dataset.json ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"{p}: dataset.json must be a JSON object")
        return data

    @staticmethod
    def _labels(root: Path, data: dict[str, Any]) -> list[str] | None:
        """Class names ordered by label value, from v2 (name -> int) or v1/MSD (int -> name) ``labels``."""
        labels = data.get("labels")
        if not labels:
            return None
        p = root / "dataset.json"
        by_value: dict[int, str] = {}
        try:
            if all(str(k).lstrip("-").isdigit() for k in labels) and all(
                isinstance(v, str) for v in labels.values()
            ):
                by_value = {int(k): str(v) for k, v in labels.items()}
            else:
                for name, value in labels.items():
                    if not isinstance(value, int):
                        raise DataError(
                            f"{p}: label {name!r} = {value!r}: region-based labels are not supported"
                        )
                    by_value[value] = str(name)
        except (TypeError, ValueError):
            raise DataError(f"{p}: cannot parse 'labels' {labels!r}") from None
        if sorted(by_value) != list(range(len(by_value))):
            raise DataError(f"{p}: label values must be 0..K-1, got {sorted(by_value)}")
        return [by_value[i] for i in range(len(by_value))]

    # -- files --------------------------------------------------------------------------------
    def _scan(self, images: Path, labels: Path, *, required_labels: bool) -> list[str]:
        if not images.is_dir():
            return []
        ending = self.file_ending
        grouped: dict[str, dict[int, Path]] = {}
        for p in sorted(images.iterdir()):
            if not p.name.endswith(ending) or p.name.startswith("."):
                continue
            stem = p.name[: -len(ending)]
            m = _CHANNEL_RE.match(stem)
            case, ch = (m.group("case"), int(m.group("channel"))) if m else (stem, -1)
            grouped.setdefault(case, {})[ch] = p
        n_expected = len(self.channel_names) if self.channel_names else None
        out = []
        for case, chans in sorted(grouped.items()):
            if -1 in chans:  # MSD-style single file
                if len(chans) > 1:
                    raise DataError(f"{images}: case {case!r} has both {case}{ending} and channel files")
                files = [chans[-1]]
            else:
                want = range(n_expected if n_expected else max(chans) + 1)
                missing = [f"{case}_{c:04d}{ending}" for c in want if c not in chans]
                if missing:
                    raise DataError(
                        f"{images}: case {case!r} is missing channel file(s) {', '.join(missing)}"
                    )
                files = [chans[c] for c in want]
            lab = labels / f"{case}{ending}"
            if not lab.is_file():
                if required_labels and labels.is_dir():
                    raise DataError(f"{files[0]}: missing label: no {lab.name} in {labels}")
                if required_labels:
                    raise DataError(f"{self.root}: no {labels.name}/ folder for the labels of {images.name}/")
                lab = None
            if case in self._cases:
                raise DataError(f"{images}: case {case!r} also exists in imagesTr")
            self._cases[case] = (files, lab)
            out.append(case)
        return out

    # -- splits -------------------------------------------------------------------------------
    def _check(self, ids: Sequence[str], source: Path) -> list[str]:
        out = []
        for cid in ids:
            cid = str(cid)
            if cid not in self._cases:
                raise DataError(
                    f"{source}: unknown id {cid!r}: no image for it in {self.root}/imagesTr or imagesTs"
                )
            out.append(cid)
        return out

    def _build_splits(self) -> dict[str, list[str]]:
        table: dict[str, list[str]] = {}
        pool: list[str] | None = None  # what cross-validation divides (cv_pool)
        for name in ("splits_final.json", "splits.json"):
            p = self.root / name
            if not p.is_file():
                continue
            try:
                data = json.loads(os.fsdecode(p.read_bytes()))  # ids as the OS decodes file names
            except (OSError, ValueError) as err:
                raise DataError(f"{p}: cannot read ({err})") from None
            if isinstance(data, list):
                if not 0 <= self.fold < len(data):
                    raise DataError(f"{p}: has {len(data)} folds; fold {self.fold} requested")
                data = data[self.fold]
                if isinstance(data, dict):  # nnU-Net's folds: train + val are every training case
                    pool = [str(c) for key in ("train", "val") for c in data.get(key, [])]
            if not isinstance(data, dict):
                raise DataError(f"{p}: expected a list of folds or a mapping split -> case ids")
            table = {str(k): self._check(v, p) for k, v in data.items()}
            break
        folder = self.root / "splits"
        if folder.is_dir():
            for p in sorted(folder.glob("*.txt")):
                table.setdefault(p.stem, self._check(read_list_file(p), p))
        if not table:
            table = seeded_split(self._tr, self.fractions, self.split_seed)
            pool = sorted(table["train"] + table["val"])
        elif self.val_split is not None and self.val_split not in table and self.train_split in table:
            train = table[self.train_split]
            pool = list(train)
            parts = seeded_split(
                train, (1 - self.fractions[1], self.fractions[1]), self.split_seed, ("t", "v")
            )
            table[self.train_split], table[self.val_split] = parts["t"], parts["v"]
        if self._ts:
            table.setdefault("imagesTs", list(self._ts))
        table.setdefault("all", list(self._tr))
        self._pool = pool if pool is not None else list(table.get(self.train_split, []))
        return table

    def cv_pool(self) -> list[str]:
        """Every training case of nnU-Net folds, the seeded train + val, or the training list before the
        validation carve-out (never the test split)."""
        return list(self._pool)

    def splits(self) -> list[str]:
        return list(self._table)

    def _split_ids(self, split: str) -> list[str] | None:
        if split in self._table:
            return list(self._table[split])
        if split.endswith(".txt") or "/" in split:
            for p in (Path(split), self.root / split):
                if p.is_file():
                    return self._check(read_list_file(p), p)
        return None

    # -- cases --------------------------------------------------------------------------------
    def paths(self, case_id: str) -> tuple[list[Path], Path | None]:
        """(channel image files, label file or None) of a case."""
        try:
            return self._cases[case_id]
        except KeyError:
            raise DataError(f"{self.root}: unknown case id {case_id!r}") from None

    def num_slices(self, case_id: str) -> int | None:
        files, _ = self.paths(case_id)
        img = _load_nifti(files[0])
        shape = img.shape
        return int(shape[slice_axes(img.affine, len(shape))[0]]) if len(shape) >= 3 else 1

    def load(self, case_id: str) -> Case:
        files, lab_path = self.paths(case_id)
        return _load_case(case_id, files, lab_path, self.num_classes, self.in_channels)

    def foreground_slices(self, case_id: str) -> np.ndarray | None:
        files, lab_path = self.paths(case_id)
        if lab_path is None:
            return None
        img = _load_nifti(files[0])  # the image's header decides the slice axis (no data is read)
        lab = _read_label(lab_path, None, self.num_classes, slice_axes(img.affine, len(img.shape)))
        return lab.reshape(lab.shape[0], -1).any(axis=1)
