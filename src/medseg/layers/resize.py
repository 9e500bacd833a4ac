"""Resizing helpers and the input-size check every model runs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_to(x: Tensor, size: tuple[int, int], mode: str = "bilinear", align_corners: bool | None = False) -> Tensor:
    """Resize ``x`` [B, C, H, W] to ``size``; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode in ("nearest", "nearest-exact", "area"):
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def upsample_like(x: Tensor, ref: Tensor, mode: str = "bilinear", align_corners: bool | None = False) -> Tensor:
    """Resize ``x`` to the spatial size of ``ref`` (the official codes' ``F.upsample(x, size=ref.size()[2:])``)."""
    return resize_to(x, tuple(ref.shape[-2:]), mode=mode, align_corners=align_corners)


def nearest_valid_size(n: int, stride: int) -> int:
    lo = max(stride, (n // stride) * stride)
    hi = lo + stride
    return lo if n - lo <= hi - n else hi


def size_hint(h: int, w: int, stride: int) -> str | None:
    """``None`` when H and W are multiples of ``stride``, else ``"nearest valid size is HxW"``."""
    if h % stride == 0 and w % stride == 0:
        return None
    return f"nearest valid size is {nearest_valid_size(h, stride)}x{nearest_valid_size(w, stride)}"


def check_input_size(x: Tensor, stride: int, model: str = "model") -> None:
    """Raise a clear ``ValueError`` unless H and W are multiples of ``stride``."""
    h, w = x.shape[-2:]
    hint = size_hint(h, w, stride)
    if hint:
        raise ValueError(f"{model}: input size {h}x{w} is not a multiple of {stride}; {hint}")
