"""Convolution + normalisation + activation, the unit most blocks are made of."""

from __future__ import annotations

from torch import nn


def make_norm(norm: str | None, channels: int) -> nn.Module:
    """``"bn"`` (BatchNorm2d), ``"in"`` (InstanceNorm2d, affine), ``"gn"`` (GroupNorm, 32 groups or fewer)."""
    if norm in (None, "none"):
        return nn.Identity()
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "gn":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {norm!r}; use 'bn', 'in', 'gn' or None")


def make_act(act: str | None, inplace: bool = True) -> nn.Module:
    """``"relu"``, ``"gelu"``, ``"sigmoid"`` or ``None``."""
    if act in (None, "none"):
        return nn.Identity()
    if act == "relu":
        return nn.ReLU(inplace=inplace)
    if act == "gelu":
        return nn.GELU()
    if act == "sigmoid":
        return nn.Sigmoid()
    if act == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=inplace)
    raise ValueError(f"unknown activation {act!r}; use 'relu', 'gelu', 'leakyrelu', 'sigmoid' or None")


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> act`` with "same" padding by default (kernel may be a (kh, kw) tuple).

    ``bias=None`` means "bias only when there is no norm"; pass ``bias=True`` to match official code
    that keeps a conv bias in front of BatchNorm (it changes the parameter count).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm: str | None = "bn",
        act: str | None = "relu",
    ) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, dil))
        if bias is None:
            bias = norm in (None, "none")
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                ks,
                stride=stride,
                padding=padding,
                dilation=dil,
                groups=groups,
                bias=bias,
            ),
            make_norm(norm, out_channels),
            make_act(act),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
