"""MONAI dictionary transforms on sample dicts (keys ``image`` ``[C, H, W]`` and ``label``).

Pipeline built by :func:`build_transforms` (``cfg`` is a :class:`medseg.config.DataConfig`)::

    normalise -> resize to cfg.size -> [augment]            (augment.preset "basic" / "none")
    normalise -> [TransUNet augment] -> resize to cfg.size  (augment.preset "transunet", as the original)

- Normalisation (``cfg.normalize.kind``): ``imagenet`` — per channel (x - mean) / std with ImageNet's
  mean/std, or the ``mean``/``std`` given (one value per channel, or one for all); ``window`` — clip to
  ``window = (lo, hi)`` and map to [0, 1] by (x - lo) / (hi - lo) (Synapse CT: (x + 125) / 400);
  ``unit`` — nothing (images already in [0, 1]); ``zscore`` — per sample and channel zero mean, unit
  variance (a constant channel only has its mean subtracted).
- Resize: image bilinear (``align_corners=False``) and label nearest, with MONAI ``Resized``; for the
  ``transunet`` preset, TransUNet's ``scipy.ndimage.zoom`` with order 3 (cubic spline) for the image and
  order 0 for the label, in training and evaluation (as ``test_single_volume``).
- ``basic`` augmentation (each with probability ``augment.prob``): horizontal flip (``flip``), vertical
  flip (``vflip``), rot90 by k in {1, 2, 3} (``rot90``), rotation by an angle uniform in
  ±``rotate_deg`` (image bilinear, label nearest, zero padding) with its own probability
  ``augment.rotate_prob`` when set (MSNet's ``RandomRotate`` rotates every sample: 1.0). With rot90 and a non-square size the
  sample is resized back to ``cfg.size``.
- ``transunet`` augmentation (TransUNet's ``RandomGenerator``): with probability ``prob`` rot90 by a
  random k in {0..3} then a flip on a random axis; otherwise with probability ``prob`` a rotation by
  an integer angle drawn like the original ``np.random.randint(-20, 20)`` (i.e. -20..19 degrees),
  nearest-neighbour (order 0) for image **and** label, ``reshape=False``; then the resize.

The deterministic part (normalise + resize; normalise only for the ``transunet`` training pipeline)
is the *pre* stage that :class:`medseg.data.base.SliceDataset` caches; the random part is the *post*
stage (:func:`build_transform_stages`). Random transforms are MONAI ``Randomizable``: seed them with
``set_random_state`` (SliceDataset does, and re-seeds them in each DataLoader worker from the
worker's seed, so runs with a seeded DataLoader ``generator`` are reproducible).

Evaluation and output: a model sees ``cfg.size``; :func:`resize_prediction` resizes logits or
probabilities (bilinear) back to the original image size (the sample's ``orig_size``) *before*
argmax / threshold, and metrics are computed at the original size.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandRotated,
    Resize,
    Resized,
    ScaleIntensityRanged,
)

from medseg.data.samples import collate_samples, finalize_sample

if TYPE_CHECKING:
    from medseg.config import DataConfig, NormalizeConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KEYS = ("image", "label")


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if hasattr(x, "as_tensor"):
            x = x.as_tensor()
        return x.detach().cpu().numpy()
    return np.asarray(x)


class LabelChanneld(MapTransform):
    """Give a ``[H, W]`` label a channel axis (``[1, H, W]``, float32) for the spatial transforms."""

    def __init__(self, keys: Sequence[Hashable] = ("label",)) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = d[key]
            if lab is None:
                continue
            if lab.ndim == 2:
                lab = lab[None]
            d[key] = lab.float() if isinstance(lab, torch.Tensor) else np.asarray(lab, dtype=np.float32)
        return d


class FinalizeSampled(MapTransform):
    """Image -> float32 tensor ``[C, H, W]``; label -> int64 tensor ``[H, W]`` (the sample contract)."""

    def __init__(self) -> None:
        super().__init__(KEYS, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return finalize_sample(dict(data))


class ZoomResized(MapTransform):
    """Resize with ``scipy.ndimage.zoom`` per channel (TransUNet: order 3 image, order 0 label).

    Only resizes when the size differs (as TransUNet's ``if x != output_size``).
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        size: Sequence[int],
        orders: Sequence[int] = (3, 0),
        allow_missing_keys=True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size = (int(size[0]), int(size[1]))
        self.orders = tuple(orders)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from scipy import ndimage

        d = dict(data)
        for key, order in self.key_iterator(d, self.orders):
            x = _numpy(d[key])
            h, w = x.shape[-2:]
            if (h, w) == self.size:
                continue
            factors = (self.size[0] / h, self.size[1] / w)
            d[key] = np.stack([ndimage.zoom(c, factors, order=order) for c in x]).astype(
                np.float32, copy=False
            )
        return d


class EnsureSized(MapTransform):
    """Resize image (bilinear) and label (nearest) to ``size`` only where the size differs."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__(KEYS, allow_missing_keys=True)
        self.size = (int(size[0]), int(size[1]))
        self._resize = {
            "image": Resize(self.size, mode="bilinear", align_corners=False),
            "label": Resize(self.size, mode="nearest"),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if tuple(d[key].shape[-2:]) != self.size:
                d[key] = self._resize[str(key)](d[key])
        return d


class TransUNetAugmentd(RandomizableTransform, MapTransform):
    """TransUNet's ``RandomGenerator`` augmentation (without its final zoom), on ``[C, H, W]`` arrays.

    With probability ``prob``: ``np.rot90`` by k ~ U{0..3}, then ``np.flip`` on axis ~ U{H, W}. Else with
    probability ``prob``: ``scipy.ndimage.rotate`` by an integer angle in ``[-max_angle, max_angle)``
    degrees, order 0 (nearest) for every key, ``reshape=False``, zero padding.
    """

    def __init__(
        self, keys: Sequence[Hashable] = KEYS, prob: float = 0.5, max_angle: int = 20, allow_missing_keys=True
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.branch_prob = float(prob)
        self.max_angle = int(max_angle)
        self._op: str | None = None
        self._k = self._axis = self._angle = 0

    def randomize(self, data: Any = None) -> None:
        self._op = None
        if self.R.random_sample() < self.branch_prob:
            self._op = "rot_flip"
            self._k = int(self.R.randint(0, 4))
            self._axis = int(self.R.randint(0, 2))
        elif self.R.random_sample() < self.branch_prob:
            self._op = "rotate"
            self._angle = int(self.R.randint(-self.max_angle, self.max_angle))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from scipy import ndimage

        d = dict(data)
        self.randomize()
        if self._op is None:
            return d
        for key in self.key_iterator(d):
            x = _numpy(d[key])
            if self._op == "rot_flip":
                x = np.flip(np.rot90(x, self._k, axes=(1, 2)), axis=1 + self._axis)
            else:  # axes (2, 1) of [C, H, W] = the original's default axes (1, 0) of [H, W]
                x = ndimage.rotate(x, self._angle, axes=(2, 1), order=0, reshape=False)
            d[key] = np.ascontiguousarray(x, dtype=np.float32)
        return d


def normalize_transform(cfg: NormalizeConfig, in_channels: int) -> MapTransform | None:
    """The MONAI transform of ``cfg.kind`` on key ``image`` (None for ``unit``)."""
    from medseg.config import ConfigError

    if cfg.kind == "unit":
        return None
    if cfg.kind == "window":
        if cfg.window is None:
            raise ConfigError(
                "data.normalize.kind=window needs data.normalize.window: [low, high] (e.g. [-125, 275])"
            )
        lo, hi = (float(v) for v in cfg.window)
        if hi <= lo:
            raise ConfigError(f"data.normalize.window must be [low, high] with low < high, got {cfg.window}")
        return ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    if cfg.kind == "zscore":
        return NormalizeIntensityd("image", channel_wise=True)
    # imagenet (or explicit mean/std)
    mean = tuple(cfg.mean) if cfg.mean is not None else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg.std is not None else IMAGENET_STD
    if len(mean) == 1:
        mean = mean * in_channels
    if len(std) == 1:
        std = std * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(
            f"data.normalize: {len(mean)} mean / {len(std)} std values for {in_channels} input channel(s); "
            "ImageNet statistics need in_channels: 3 (grey images are repeated to RGB), or give one value each"
        )
    if any(s <= 0 for s in std):
        raise ConfigError(f"data.normalize.std must be > 0, got {std}")
    return NormalizeIntensityd(
        "image",
        subtrahend=np.asarray(mean, np.float32),
        divisor=np.asarray(std, np.float32),
        channel_wise=True,
    )


def _resize_transform(cfg: DataConfig) -> MapTransform:
    if cfg.augment.preset == "transunet":
        return ZoomResized(KEYS, cfg.size, orders=(3, 0))
    return Resized(
        KEYS,
        spatial_size=tuple(cfg.size),
        mode=("bilinear", "nearest"),
        align_corners=(False, None),
        allow_missing_keys=True,
    )


def build_transform_stages(cfg: DataConfig, train: bool) -> tuple[Compose, Compose | None]:
    """(deterministic pre stage, random post stage or None); see the module docstring."""
    pre: list[Any] = [LabelChanneld()]
    norm = normalize_transform(cfg.normalize, cfg.in_channels)
    if norm is not None:
        pre.append(norm)
    aug = cfg.augment
    if not train or aug.preset == "none":
        return Compose([*pre, _resize_transform(cfg)]), None
    if aug.preset == "transunet":
        return Compose(pre), Compose([TransUNetAugmentd(KEYS, prob=aug.prob), _resize_transform(cfg)])
    pre.append(_resize_transform(cfg))
    post: list[Any] = []
    if aug.flip:
        post.append(RandFlipd(KEYS, prob=aug.prob, spatial_axis=1, allow_missing_keys=True))
    if aug.vflip:
        post.append(RandFlipd(KEYS, prob=aug.prob, spatial_axis=0, allow_missing_keys=True))
    if aug.rot90:
        post.append(RandRotate90d(KEYS, prob=aug.prob, max_k=3, spatial_axes=(0, 1), allow_missing_keys=True))
    if aug.rotate_deg > 0:
        post.append(
            RandRotated(
                KEYS,
                range_x=math.radians(aug.rotate_deg),
                prob=aug.prob if aug.rotate_prob is None else aug.rotate_prob,
                keep_size=True,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                align_corners=False,
                allow_missing_keys=True,
            )
        )
    if aug.rot90 and cfg.size[0] != cfg.size[1]:
        post.append(EnsureSized(cfg.size))
    return Compose(pre), (Compose(post) if post else None)


def build_transforms(cfg: DataConfig, train: bool, seed: int | None = None) -> Compose:
    """The whole pipeline on one sample dict (label ``[H, W]`` or ``[1, H, W]``) -> contract sample."""
    pre, post = build_transform_stages(cfg, train)
    out = Compose([*pre.transforms, *(post.transforms if post is not None else ()), FinalizeSampled()])
    if seed is not None:
        out.set_random_state(seed=seed)
    return out


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ValueError(f"a size is an int or (H, W), got {size!r}")
    return (int(size[0]), int(size[1]))


class MultiScaleCollate:
    """``collate_fn`` for multi-scale training: one size per batch, drawn from ``sizes``.

    Collates with :func:`medseg.data.samples.collate_samples`, then resizes the whole batch: image
    bilinear (``align_corners=False``), label nearest. The chosen size is kept in ``last_size``. The
    draw is seeded by ``seed`` and, inside a DataLoader worker, by the worker's seed (so workers do not
    repeat each other and a seeded DataLoader generator makes the sequence reproducible).
    """

    def __init__(self, sizes: Sequence[int | Sequence[int]], seed: int = 0) -> None:
        if not sizes:
            raise ValueError("MultiScaleCollate needs at least one size")
        self.sizes = [_pair(s) for s in sizes]
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._worker_seed: int | None = None
        self.last_size: tuple[int, int] | None = None

    def pick(self, draw: int | None = None) -> tuple[int, int]:
        """The size for one batch: from ``draw`` (the first sample's augmentation seed) when the batch
        came from :class:`~medseg.data.sampling.EpochSampler`, else from this collate's own stream."""
        if draw is not None:
            rng = np.random.default_rng([self.seed % 2**32, int(draw)])
            return self.sizes[int(rng.integers(len(self.sizes)))]
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker_seed != info.seed:
            self._rng = np.random.default_rng([self.seed, info.seed % (2**63)])
            self._worker_seed = info.seed
        return self.sizes[int(self._rng.integers(len(self.sizes)))]

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out = collate_samples(batch)
        size = self.pick(batch[0].get("draw") if batch else None)
        self.last_size = size
        if tuple(out["image"].shape[-2:]) != size:
            out["image"] = F.interpolate(out["image"], size=size, mode="bilinear", align_corners=False)
            if "label" in out:
                lab = F.interpolate(out["label"][:, None].float(), size=size, mode="nearest")
                out["label"] = lab[:, 0].round().to(torch.int64)
        return out


def resize_prediction(x: torch.Tensor, size: Sequence[int], mode: str | None = None) -> torch.Tensor:
    """Resize predictions ``[B, C, h, w]`` or ``[C, h, w]`` to ``size`` (same rank out).

    Float logits/probabilities are resized bilinearly (``align_corners=False``) — do this *before*
    argmax/threshold; integer label maps (``[B, h, w]`` / ``[h, w]`` also accepted) use nearest.
    """
    size = _pair(size)
    if not x.is_floating_point():
        squeeze = x.ndim == 2
        lab = x[None] if squeeze else x
        out = F.interpolate(lab[:, None].float(), size=size, mode=mode or "nearest")[:, 0].round().to(x.dtype)
        return out[0] if squeeze else out
    if x.ndim not in (3, 4):
        raise ValueError(f"resize_prediction expects [B, C, h, w] or [C, h, w], got shape {tuple(x.shape)}")
    single = x.ndim == 3
    y = x[None] if single else x
    if tuple(y.shape[-2:]) != size:
        mode = mode or "bilinear"
        kw = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
        y = F.interpolate(y, size=size, mode=mode, **kw)
    return y[0] if single else y
