"""The common case model every dataset reader produces, and the slice dataset built on it.

A *reader* (one per on-disk format) turns a case id into a :class:`Case`:

- ``image``: float32, 2D ``[C, H, W]`` or volume ``[C, D, H, W]``, in the reader's native units
  (PNG/JPEG divided by 255 to [0, 1]; ACDC h5 as stored in [0, 1]; TransUNet npz/h5 as stored, so raw
  Synapse HU stay HU; NIfTI raw intensities). Normalisation (ImageNet, HU window, z-score) is a
  transform (:mod:`medseg.data.transforms`), never the reader's job.
- ``label``: int64 ``[H, W]`` or ``[D, H, W]`` with values in ``0 .. num_classes - 1``, or ``None``
  (unlabelled input). Readers check the range and raise :class:`medseg.utils.DataError` otherwise.
- ``spacing``: voxel size in array axis order (``(z, y, x)`` for volumes, ``(y, x)`` for 2D) or ``None``.
- ``meta``: source path(s), original size, NIfTI affine/header, ...

:class:`SliceDataset` expands volumes to axial slices (axis 0 of ``D x H x W``) and yields the
sample dicts of the data contract (``docs/dev/contracts.md``)::

    {"image": float32 [C, H, W], "label": int64 [H, W], "case": str, "slice": int | None,
     "spacing": tuple | None, "orig_size": (H, W)}

``spacing`` is the *original case's* spacing (all axes; a volume slice keeps the volume's
``(z, y, x)``) and ``orig_size`` the slice's size before resizing: evaluation resizes predictions
back to ``orig_size`` (:func:`medseg.data.transforms.resize_prediction`) and regroups slices by ``case``.
Use :func:`~medseg.data.samples.collate_samples` (or :class:`medseg.data.transforms.MultiScaleCollate`) as the DataLoader's
``collate_fn``: torch's default collate cannot batch ``None`` slices/spacings. The reader for a data
config is :func:`medseg.data.readers.build_reader` (it imports the reader modules, which import this one).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.samples import Sample, finalize_sample, plain_tensor
from medseg.utils import DataError

if TYPE_CHECKING:
    from medseg.config import DataConfig

logger = logging.getLogger(__name__)



@dataclass
class Case:
    """One image or volume with its label, in the reader's native units (see the module docstring)."""

    id: str
    image: np.ndarray
    label: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        """True for ``[C, D, H, W]`` images."""
        return self.image.ndim == 4

    @property
    def num_slices(self) -> int | None:
        """``D`` for a volume, ``None`` for a 2D case."""
        return int(self.image.shape[1]) if self.is_volume else None

    def slice(self, index: int) -> Case:
        """The 2D case of axial slice ``index`` (axis 0 of ``D x H x W``); spacing and meta are kept."""
        if not self.is_volume:
            raise ValueError(f"case {self.id} is 2D; it has no slices")
        label = None if self.label is None else self.label[index]
        meta = dict(self.meta, slice=int(index))
        return Case(id=self.id, image=self.image[:, index], label=label, spacing=self.spacing, meta=meta)


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "foreground"]`` for binary tasks, else ``["background", "class_1", ...]``."""
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, num_classes)]


def adapt_channels(
    image: np.ndarray, in_channels: int, source: str | Path, *, allow_luminance: bool
) -> np.ndarray:
    """Make a channel-first image have ``in_channels`` channels.

    1 -> N repeats the grey channel; 3 -> 1 (only where ``allow_luminance``: RGB photographs) takes the
    ITU-R 601-2 luminance ``0.299 R + 0.587 G + 0.114 B`` (what Pillow's ``convert("L")`` computes,
    here in float). Anything else is a :class:`DataError` naming ``source``.
    """
    c = image.shape[0]
    if c == in_channels:
        return image
    if c == 1:
        return np.repeat(image, in_channels, axis=0)
    if c == 3 and in_channels == 1 and allow_luminance:
        w = np.asarray([0.299, 0.587, 0.114], dtype=np.float32).reshape((3,) + (1,) * (image.ndim - 1))
        return (image * w).sum(axis=0, keepdims=True, dtype=np.float32)
    raise DataError(f"{source}: image has {c} channels but data.in_channels is {in_channels}")


def check_label(label: np.ndarray, num_classes: int | None, source: str | Path) -> np.ndarray:
    """Return ``label`` as int64 after checking it is integral, >= 0 and (if given) < ``num_classes``."""
    if label.dtype.kind == "b":
        return label.astype(np.int64)
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
            raise DataError(f"{source}: label map has non-integer values")
    if label.size:
        lo, hi = label.min(), label.max()
        if lo < 0:
            raise DataError(f"{source}: negative label value {lo:g}")
        if num_classes is not None and hi >= num_classes:
            raise DataError(
                f"{source}: label value {hi:g} is outside 0..{num_classes - 1} (data.num_classes = {num_classes})"
            )
    return label.astype(np.int64, copy=False)


def check_image(image: np.ndarray, source: str | Path, *, allow_nonfinite: bool = False) -> np.ndarray:
    """``image`` checked for inference: no 0-length axis, and only finite values.

    A NaN or infinite value is a :class:`DataError` naming ``source``; with ``allow_nonfinite`` it is
    replaced by 0 (in reader units, before normalisation) and a one-line warning is logged.
    """
    if 0 in image.shape:
        raise DataError(f"{source}: empty image: shape {tuple(image.shape)} has a 0-length axis")
    bad = ~np.isfinite(image)
    n = int(bad.sum())
    if not n:
        return image
    what = f"{source}: {n} of {image.size} image values are NaN or infinite"
    if not allow_nonfinite:
        raise DataError(f"{what} (--allow-nonfinite replaces them with 0)")
    logger.warning("%s; replaced with 0", what)
    return np.where(bad, np.zeros((), image.dtype), image)


def read_list_file(path: Path) -> list[str]:
    """Ids from a split list: one per line; blank lines and ``#`` comments skipped; duplicates dropped.

    The bytes are decoded as the OS decodes file names (:func:`os.fsdecode`: UTF-8, other bytes as
    surrogate escapes), so an id matches its file's name whatever bytes the name holds.
    """
    try:
        text = os.fsdecode(path.read_bytes())
    except OSError as err:
        raise DataError(f"{path}: cannot read split list: {err}") from None
    out: dict[str, None] = {}
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            out.setdefault(item, None)
    return list(out)


def seeded_split(
    ids: Sequence[str], fractions: Sequence[float], seed: int, names: Sequence[str] = ("train", "val", "test")
) -> dict[str, list[str]]:
    """Split ``ids`` at random (seeded) into ``names`` with ``fractions`` (the first takes the rest).

    Every split after the first gets ``round(fraction * n)`` ids; each non-zero fraction gets at
    least one id when there are enough ids to leave one for the first split. Ids keep their sorted order.

    Not MONAI's ``partition_dataset(ratios=...)`` (which the cross-validation folds use,
    :mod:`medseg.data.splits`), measured: its ratios can leave a non-zero fraction empty (4 ids, val
    0.1 -> 0 val ids; 6 ids, test 0.1 -> 0 test ids; here 1 each), and its shuffle draws another order,
    so switching would move 12 of the 20 test ids of a 98-id data set (seed 0, 70/10/20) into
    training: runs trained before would be evaluated on cases they trained on.
    """
    if len(fractions) != len(names):
        raise ValueError("one fraction per split name")
    if any(f < 0 for f in fractions) or sum(fractions[1:]) >= 1:
        raise ValueError(f"split fractions must be >= 0 and leave some for {names[0]}: {tuple(fractions)}")
    ordered = sorted(ids)
    n = len(ordered)
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[str]] = {}
    start = 0
    for name, frac in zip(names[1:], fractions[1:], strict=True):
        k = int(round(frac * n))
        if frac > 0 and k == 0 and n - start > 1:
            k = 1
        k = min(k, max(n - start - 1, 0))
        out[name] = sorted(ordered[i] for i in perm[start : start + k])
        start += k
    out[names[0]] = sorted(ordered[i] for i in perm[start:])
    return {name: out[name] for name in names}


class Reader(ABC):
    """A dataset on disk in one format: split lists of case ids and a loader for each case.

    Subclasses implement :meth:`splits`, :meth:`_split_ids` and :meth:`load`; :meth:`ids` adds the
    unknown-split error. Volume formats also override :meth:`num_slices` (cheaply, from a header),
    and may override :meth:`load_slice` / :meth:`foreground_slices` when a single slice or the label
    alone can be read without the whole volume.
    """

    format: ClassVar[str] = ""
    #: True when :meth:`load_slice` reads one slice without decoding the whole volume.
    random_slice_access: ClassVar[bool] = False

    def __init__(
        self,
        root: str | Path,
        *,
        num_classes: int = 2,
        in_channels: int = 1,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found")
        if num_classes < 2:
            raise ValueError("num_classes counts the background: use 2 for a binary task")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self._class_names = list(class_names) if class_names else None
        #: Splits set by a cross-validation fold (``data.splits_file``); they take precedence over the data's own.
        self.fold_splits: dict[str, list[str]] = {}
        if self._class_names is not None and len(self._class_names) != self.num_classes:
            raise DataError(
                f"{self.root}: {len(self._class_names)} class names given for {self.num_classes} classes"
            )

    # -- splits -------------------------------------------------------------------------------
    @abstractmethod
    def splits(self) -> list[str]:
        """Names of the available splits."""

    @abstractmethod
    def _split_ids(self, split: str) -> list[str] | None:
        """Ids of ``split``, or ``None`` when the split does not exist."""

    def ids(self, split: str) -> list[str]:
        """Case ids of ``split``; :class:`DataError` listing the available splits when unknown."""
        if split in self.fold_splits:
            return list(self.fold_splits[split])
        out = self._split_ids(split)
        if out is None:
            raise DataError(
                f"{self.root}: unknown split {split!r}; available splits: {', '.join(self.splits())}"
            )
        return out

    def cv_pool(self) -> list[str]:
        """The cases cross-validation divides into folds: the training split, together with the validation
        cases a reader carves or seeds out of it; never the test split, nor a validation list of the data's own."""
        return self._split_ids(getattr(self, "train_split", "train")) or []

    def group_of(self, case_id: str) -> str:
        """The patient / volume / video a case belongs to (:func:`medseg.data.splits.default_group`): cases
        of one group always fall in the same cross-validation fold."""
        from medseg.data.splits import default_group

        return default_group(case_id)

    # -- cases --------------------------------------------------------------------------------
    @abstractmethod
    def load(self, case_id: str) -> Case:
        """Read one case in native units (see the module docstring)."""

    def num_slices(self, case_id: str) -> int | None:
        """``D`` of a volume case, ``None`` for a 2D case (2D formats need not open the file)."""
        return None

    def load_slice(self, case_id: str, index: int) -> Case:
        """2D case of slice ``index`` of a volume (default: load the whole volume)."""
        return self.load(case_id).slice(index)

    def foreground_slices(self, case_id: str) -> np.ndarray | None:
        """Bool ``[D]``: which slices of a volume hold any foreground (``None`` for unlabelled / 2D)."""
        case = self.load(case_id)
        if case.label is None or not case.is_volume:
            return None
        return case.label.reshape(case.label.shape[0], -1).any(axis=1)

    @property
    def class_names(self) -> list[str]:
        """Names of the ``num_classes`` classes, background first."""
        return list(self._class_names) if self._class_names else default_class_names(self.num_classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, num_classes={self.num_classes})"

    @staticmethod
    def config_kwargs(cfg: DataConfig) -> dict[str, Any]:
        """Constructor arguments every reader takes from the data config (subclasses add their own)."""
        return {
            "num_classes": cfg.num_classes,
            "in_channels": cfg.in_channels,
            "class_names": cfg.class_names,
            "train_split": cfg.train_split,
            "val_split": cfg.val_split,
            "split_seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
        }

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Reader:
        return cls(cfg.root, **cls.config_kwargs(cfg))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Slice dataset
# ---------------------------------------------------------------------------------------------


def _case_to_sample(case: Case) -> Sample:
    """A 2D case as a transform input: image ``[C, H, W]`` and label ``[1, H, W]`` (channel-first)."""
    sample: Sample = {
        "image": np.ascontiguousarray(case.image, dtype=np.float32),
        "case": case.id,
        "slice": case.meta.get("slice"),
        "spacing": case.spacing,
        "orig_size": tuple(int(s) for s in case.image.shape[-2:]),
    }
    if case.label is not None:
        sample["label"] = np.ascontiguousarray(case.label[None], dtype=np.float32)
    return sample


class SliceDataset(Dataset):
    """2D samples from a reader: 2D cases as they are, volumes expanded to their axial slices.

    Args:
        reader: the data set.
        ids: case ids (e.g. ``reader.ids("train")``).
        pre_transform: deterministic transform (normalise + resize); its output is cached when ``cache``.
        transform: random transform applied on every access (augmentation).
        cache: keep pre-transformed samples in memory (a volume is decoded once and all its slices
            pre-transformed together). Each DataLoader worker holds its own cache.
        skip_empty_slices: drop volume slices without foreground (training); needs the labels of all
            volumes at construction (read label-only where the format allows). 2D cases are never dropped.
        require_labels: raise :class:`DataError` for a case without a label.
        seed: seeds the random transforms (MONAI ``set_random_state``); in a DataLoader worker they are
            re-seeded from the worker's seed, so runs are reproducible with a seeded DataLoader generator.

    Slice counts come from :meth:`Reader.num_slices` (headers only): nothing is decoded at construction
    unless ``skip_empty_slices``.
    """

    def __init__(
        self,
        reader: Reader,
        ids: Sequence[str],
        *,
        pre_transform: Callable[[Sample], Sample] | None = None,
        transform: Callable[[Sample], Sample] | None = None,
        cache: bool = False,
        skip_empty_slices: bool = False,
        require_labels: bool = True,
        seed: int | None = 0,
    ) -> None:
        self.reader = reader
        self.ids = list(ids)
        self.pre_transform = pre_transform
        self.transform = transform
        self.cache = cache
        self.require_labels = require_labels
        self.seed = seed
        self._rands: list[Any] | None = None
        self._cache: dict[tuple[str, int | None], Sample] = {}
        self.disk_dir: Path | None = None  # set (with disk_key) to cache pre-transformed samples on disk
        self.disk_key = ""
        self._disk: Any = None
        self._last: tuple[str, Case] | None = None
        self._seeded_for: int | None = None
        self.index: list[tuple[str, int | None]] = []
        self._slices_of: dict[str, list[int]] = {}
        for cid in self.ids:
            d = reader.num_slices(cid)
            if d is None:
                self.index.append((cid, None))
                continue
            keep = list(range(d))
            if skip_empty_slices:
                fg = reader.foreground_slices(cid)
                if fg is not None:
                    keep = [int(i) for i in np.flatnonzero(fg)]
            self._slices_of[cid] = keep
            self.index.extend((cid, k) for k in keep)
        if seed is not None:
            self.set_random_state(seed)

    @classmethod
    def from_config(
        cls, reader: Reader, ids: Sequence[str], cfg: DataConfig, *, train: bool, seed: int | None = 0
    ) -> SliceDataset:
        """Transforms, cache and empty-slice skipping (training only) as ``cfg`` says."""
        from medseg.data.transforms import build_transform_stages

        pre, post = build_transform_stages(cfg, train=train)
        return cls(
            reader,
            ids,
            pre_transform=pre,
            transform=post,
            cache=cfg.cache is not False,  # "auto": decided by the training data module from a memory estimate
            skip_empty_slices=cfg.skip_empty_slices and train,
            seed=seed,
        )

    def _randomizables(self) -> list[Any]:
        """The random transforms (those with a ``RandomState`` ``R``) of ``transform``, in order."""
        if self._rands is None:
            found: list[Any] = []

            def walk(t: Any) -> None:  # Compose members and wrapped transforms (RandRotated.rand_rotate, ...)
                if any(t is f for f in found):
                    return
                if isinstance(getattr(t, "R", None), np.random.RandomState):
                    found.append(t)
                children = list(getattr(t, "transforms", None) or ())
                children += [v for v in vars(t).values() if isinstance(getattr(v, "R", None), np.random.RandomState)]
                for child in children:
                    walk(child)

            if self.transform is not None:
                walk(self.transform)
            self._rands = found
        return self._rands

    def set_random_state(self, seed: int) -> None:
        """Seed every random transform."""
        from monai.data.utils import set_rnd

        if self.transform is not None:
            set_rnd(self.transform, seed=int(seed) % (2**32))

    def __len__(self) -> int:
        return len(self.index)

    def _prepare(self, case: Case) -> Sample:
        if case.label is None and self.require_labels:
            raise DataError(f"{case.meta.get('image_path', case.id)}: case {case.id} has no label")
        sample = _case_to_sample(case)
        return self.pre_transform(sample) if self.pre_transform is not None else sample

    def _store(self, sample: Sample) -> Sample:
        out = dict(sample)
        out["image"] = plain_tensor(out["image"])
        if out.get("label") is not None:
            out["label"] = plain_tensor(out["label"])
        return out

    def use_disk_cache(self, folder: Path, key: str) -> None:
        """Keep pre-transformed samples on disk in ``folder`` (MONAI ``PersistentDataset``, created on the
        first sample read in training): one file per sample, named by a hash of (case, slice, ``key``), where
        ``key`` names the preprocessing, so other settings never read these files."""
        self.disk_dir, self.disk_key, self._disk, self.cache = Path(folder), key, None, False

    def _disk_dataset(self) -> Any:
        if self._disk is None:
            from monai.data import PersistentDataset

            from medseg.data.disk_cache import PreparedSample

            items = [{"case": cid, "slice": k, "preprocessing": self.disk_key} for cid, k in self.index]
            self._disk_pos = {(cid, k): i for i, (cid, k) in enumerate(self.index)}
            self._disk = PersistentDataset(items, transform=PreparedSample(self), cache_dir=self.disk_dir)
        return self._disk

    def _load_pre(self, cid: str, k: int | None, *, disk: bool = True) -> Sample:
        key = (cid, k)
        if key in self._cache:
            return self._cache[key]
        if disk and self.disk_dir is not None:
            ds = self._disk_dataset()
            return ds[self._disk_pos[key]]
        if k is None:
            sample = self._store(self._prepare(self.reader.load(cid)))
            if self.cache:
                self._cache[key] = sample
            return sample
        if self.cache:  # decode the volume once, pre-transform all its used slices
            case = self.reader.load(cid)
            for j in self._slices_of[cid]:
                self._cache[(cid, j)] = self._store(self._prepare(case.slice(j)))
            return self._cache[key]
        if self.reader.random_slice_access:
            return self._store(self._prepare(self.reader.load_slice(cid, k)))
        if self._last is None or self._last[0] != cid:  # keep the last decoded volume
            self._last = (cid, self.reader.load(cid))
        return self._store(self._prepare(self._last[1].slice(k)))

    def check_cases(self) -> list[str]:
        """Decode every case once, as training will (filling the cache when it is on); one line per bad case.

        Catches what would otherwise stop a run mid-training: unreadable files, a mask that does not match
        its image, labels outside the class range, missing labels, NaN or Inf intensities.
        """
        problems: list[str] = []
        for cid in self.ids:
            keys = [(cid, k) for k in self._slices_of[cid]] if cid in self._slices_of else [(cid, None)]
            try:
                if self.cache:
                    samples = [self._load_pre(*key) for key in keys]
                    images = [s["image"] for s in samples]
                else:
                    case = self.reader.load(cid)
                    if keys and keys[0][1] is not None:
                        self._prepare(case.slice(keys[0][1]))
                    elif not case.is_volume:
                        self._prepare(case)
                    images = [torch.as_tensor(case.image)]
                if not all(bool(torch.isfinite(im).all()) for im in images):
                    raise DataError(f"{self._source(cid)}: image has non-finite values (NaN or Inf)")
            except DataError as err:
                problems.append(str(err))
            except (OSError, ValueError, RuntimeError) as err:
                problems.append(f"case {cid}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return problems

    def _source(self, cid: str) -> str:
        """The image file of case ``cid`` where the reader can say, else the case id."""
        paths = getattr(self.reader, "paths", None) or getattr(self.reader, "path", None)
        try:
            p = paths(cid) if paths else cid
        except Exception:  # the id itself is what is wrong
            return f"case {cid}"
        while isinstance(p, (list, tuple)) and p:
            p = p[0]
        return str(p)

    def __getitem__(self, i: int | tuple[int, int]) -> Sample:
        """Sample ``i``; a ``(epoch, index)`` key (:class:`medseg.data.sampling.SampleKey`) seeds its
        augmentation from ``(seed, epoch, index)`` alone, so training is reproducible and resumable."""
        draw = None
        if isinstance(i, tuple):
            from medseg.data.sampling import sample_seed

            epoch, i = int(i[0]), int(i[1])
            draw = sample_seed(self.seed or 0, epoch, i)
            for j, t in enumerate(self._randomizables()):  # reseeding in place: ~30x cheaper than set_rnd
                t.R.seed((draw + 7919 * j) % 2**32)
        else:
            info = torch.utils.data.get_worker_info()
            if info is not None and self._seeded_for != info.seed:
                self.set_random_state(info.seed)
                self._seeded_for = info.seed
        cid, k = self.index[i]
        sample = dict(self._load_pre(cid, k))
        if self.transform is not None:
            sample = self.transform(sample)
        out = finalize_sample(sample)
        if draw is not None:
            out["draw"] = draw  # seeds per-batch choices (multi-scale size) in the collate function
        return out
