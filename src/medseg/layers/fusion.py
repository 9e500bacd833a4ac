"""Subtraction units and the multi-scale subtraction pyramid (MSNet Eq. 1, M2SNet Eq. 2-3).

Shared by MSNet/M2SNet (``models/msnet.py``) and MGRAD-UNet's differential decoders
(``models/mgrad_unet.py``), whose MSD is the same pyramid and whose GRAD gates the lower operand of
the first-order units with reverse attention.

Wiring (official ``model/miccai_msnet.py``): five 64-channel features f1 (finest) .. f5 (coarsest).
- first order  x5_4, x4_3, x3_2, x2_1           = U(up(f_{k+1}), f_k)
- second order x5_4_3, x4_3_2, x3_2_1           = U(up(first_{k+1}), first_k)
- third order  x5_4_3_2, x4_3_2_1
- fourth order x5_4_3_2_1 = U(up(conv(x5_4_3_2)), x4_3_2_1)   (the extra conv is ``x5_dem_4``)
- CE_i (Eq. 3): level4 = x5_4; level3 = conv(x4_3 + x5_4_3); level2 = conv(x3_2 + x4_3_2 + x5_4_3_2);
  level1 = conv(x2_1 + x3_2_1 + x4_3_2_1 + x5_4_3_2_1).
Every unit is conv3x3(bias)-BN-ReLU applied to the difference map D(a, b) of upsampled ``a`` and ``b``:
- ``su``  (MSNet, Eq. 1):  D = |a - b|
- ``msu`` (M2SNet, Eq. 2): D = sum_k |F_k(a) - F_k(b)| over ``kernel_sizes``; F_1 is the identity and
  F_k (k > 1) a fixed k x k filter followed by a trainable BatchNorm + ReLU that is SHARED by all
  units and both operands (exactly two BN layers for kernels (1, 3, 5), as the official code).
- ``add`` (ablation, paper Table 9): D = a + b.
- ``aspp`` / ``denseaspp`` (M2SNet Table 12, Fig. 7): ``msu`` with the fixed filters replaced by a
  trainable ASPP (parallel dilated 3x3 conv-BN-ReLU, rates ``ASPP_RATES``) or DenseASPP (the same,
  cascaded: branch i sees cat(x, branch 1..i-1), rates ``DENSEASPP_RATES``) module, shared by all
  units and both operands like the fixed filters. Fig. 7's exact layout is not in the text (ours).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct
from medseg.layers.resize import upsample_like

UNIT_TYPES = ("su", "msu", "add", "aspp", "denseaspp")
ASPP_RATES = (6, 12, 18)  # DeepLab v3's 3x3 rates (output stride 16)
DENSEASPP_RATES = (3, 6, 12, 18, 24)  # DenseASPP's rates


def _fixed_kernel(k: int, weights: str) -> Tensor:
    if weights == "ones":
        return torch.ones(k, k)
    if weights == "gaussian":
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # OpenCV's default sigma for a k x k kernel
        r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        g2 = torch.outer(g, g)
        return (g2 / g2.sum()).float()
    raise ValueError(f"unknown filter weights {weights!r}; use 'ones' or 'gaussian'")


class FixedFilter(nn.Module):
    """A fixed (non-trainable) k x k filter, then trainable BN + ReLU (official ``CNN1``).

    ``depthwise=False`` is the official full (C, C, k, k) convolution: every output channel is the
    k x k window sum over *all* input channels. It is computed as a channel sum followed by one
    single-channel k x k filter broadcast to C channels -- mathematically identical to the full
    convolution at ~1/C^2 of the cost. ``fast=False`` runs the literal full convolution (used to
    test the equivalence). The kernel is a non-persistent buffer: never a parameter, never in the
    state_dict, always on the module's device.
    """

    def __init__(self, channels: int, kernel_size: int, weights: str = "ones", depthwise: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"fixed filter size must be odd and >= 1, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.depthwise = depthwise
        self.fast = True
        self.register_buffer("kernel", _fixed_kernel(kernel_size, weights)[None, None], persistent=False)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=False)

    def _filter(self, x: Tensor) -> Tensor:
        c, k = x.shape[1], self.kernel_size
        kern = self.kernel.to(dtype=x.dtype)
        if self.depthwise:
            return F.conv2d(x, kern.expand(c, 1, k, k), padding=k // 2, groups=c)
        if self.fast:
            s = F.conv2d(x.sum(dim=1, keepdim=True), kern, padding=k // 2)
            return s.expand(-1, c, -1, -1)
        return F.conv2d(x, kern.expand(c, c, k, k), padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self._filter(x)))


class ASPPBranches(nn.Module):
    """Dilated 3x3 conv-BN-ReLU branches; ``dense=True`` cascades them (DenseASPP). Returns the branch list."""

    def __init__(self, channels: int, rates: Sequence[int], *, dense: bool = False) -> None:
        super().__init__()
        self.dense = dense
        self.branches = nn.ModuleList(
            ConvNormAct(channels * (i + 1 if dense else 1), channels, 3, dilation=r) for i, r in enumerate(rates)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs: list[Tensor] = []
        for branch in self.branches:
            outs.append(branch(torch.cat([x, *outs], dim=1) if self.dense else x))
        return outs


class SubtractionPyramid(nn.Module):
    """Multi-order subtraction units over five same-width features, aggregated per level (CE_i).

    Args:
        channels: width of all five inputs and of every unit.
        unit: ``"su"`` | ``"msu"`` | ``"add"`` | ``"aspp"`` | ``"denseaspp"`` (see module docstring).
        kernel_sizes: filter sizes of the ``msu`` unit, e.g. ``(1, 3)``, ``(1, 3, 5)``, ``(1, 3, 5, 7)``.
        filter_weights: ``"ones"`` (paper) or ``"gaussian"`` (ablation, Table 11).
        depthwise: per-channel fixed filters instead of the official full ones (NOTES §7 item 6).
        orders: how many pyramid orders are used (1..4: M2SNet Table 9's +SU_2 .. +SU_5).
        bias: conv bias in front of BN in every unit/level conv (MSNet/M2SNet code: ``True``; MGRAD-UNet's
            ``BasicConv2d``: ``False``).
        top_conv: the extra conv (official ``x5_dem_4``) on the upper operand of the fourth-order unit
            (MSNet/M2SNet: ``True``; MGRAD-UNet's addRA decoder has none: ``False``).

    ``forward(features, lower=None, first_order_sum=False)`` takes ``[f1, .., f5]`` (finest first) and
    returns ``[level1, level2, level3, level4]``. MGRAD-UNet's GRAD (Eq. 4) passes ``lower``, four tensors
    that replace ``f1 .. f4`` as the lower operands of the first-order units (the reverse-attended R_k),
    and ``first_order_sum=True`` for the addRA code's ``|up(f_{k+1}) + lower_k|`` in those units.
    """

    def __init__(
        self,
        channels: int = 64,
        *,
        unit: str = "su",
        kernel_sizes: Sequence[int] = (1, 3, 5),
        filter_weights: str = "ones",
        depthwise: bool = False,
        orders: int = 4,
        bias: bool = True,
        top_conv: bool = True,
    ) -> None:
        super().__init__()
        if unit not in UNIT_TYPES:
            raise ValueError(f"unknown subtraction unit {unit!r}; use one of {UNIT_TYPES}")
        if not 1 <= orders <= 4:
            raise ValueError(f"orders must be in 1..4, got {orders}")
        if unit == "msu" and 1 not in kernel_sizes:
            raise ValueError("msu kernel_sizes must include 1 (the raw difference), e.g. (1, 3, 5)")
        self.unit = unit
        self.orders = orders
        self.filters = nn.ModuleList(
            FixedFilter(channels, k, filter_weights, depthwise) for k in sorted(set(kernel_sizes)) if k > 1
        ) if unit == "msu" else nn.ModuleList()
        self.aspp = (
            ASPPBranches(channels, DENSEASPP_RATES if unit == "denseaspp" else ASPP_RATES, dense=unit == "denseaspp")
            if unit in ("aspp", "denseaspp")
            else None
        )

        def conv() -> ConvNormAct:
            return ConvNormAct(channels, channels, 3, bias=bias)

        # units[o][i]: order o+1, the unit whose lower operand sits at level i+1 (finest first).
        self.units = nn.ModuleList(nn.ModuleList(conv() for _ in range(4 - o)) for o in range(orders))
        self.top_conv = conv() if orders == 4 and top_conv else None  # official ``x5_dem_4`` before the 4th order
        self.level_convs = nn.ModuleList(conv() for _ in range(3))  # level1..level3 (level4 has none)

    def difference(self, a: Tensor, b: Tensor) -> Tensor:
        """D(a, b) for already size-matched ``a`` (upper, upsampled) and ``b`` (lower)."""
        if self.unit == "add":
            return a + b
        d = (a - b).abs()
        for f in self.filters:
            d = d + (f(a) - f(b)).abs()
        if self.aspp is not None:
            for fa, fb in zip(self.aspp(a), self.aspp(b), strict=True):
                d = d + (fa - fb).abs()
        return d

    def forward(
        self,
        features: Sequence[Tensor],
        lower: Sequence[Tensor] | None = None,
        *,
        first_order_sum: bool = False,
    ) -> list[Tensor]:
        if len(features) != 5:
            raise ValueError(f"SubtractionPyramid expects 5 features, got {len(features)}")
        if lower is not None and len(lower) != 4:
            raise ValueError(f"SubtractionPyramid expects 4 lower operands, got {len(lower)}")
        prev = list(features)
        terms: list[list[Tensor]] = [[] for _ in range(4)]  # terms per level 1..4
        for o, units in enumerate(self.units):
            out: list[Tensor] = [prev[0]] * len(units)  # placeholders, all overwritten below
            # Top-down (x5_4 before x4_3 ...) as the official code: with ``msu`` the shared fixed-filter
            # BatchNorms then update their running statistics in the same order.
            for i in reversed(range(len(units))):
                a = prev[i + 1]
                b = lower[i] if o == 0 and lower is not None else prev[i]
                if o == 3 and self.top_conv is not None:
                    a = self.top_conv(a)
                a = upsample_like(a, b)
                out[i] = units[i]((a + b).abs() if o == 0 and first_order_sum else self.difference(a, b))
            for i, t in enumerate(out):
                terms[i].append(t)  # a unit feeds the level of its lower operand (x4_3, x5_4_3 -> level3)
            prev = out
        level4 = terms[3][0]
        levels = [conv(sum(t[1:], t[0])) for conv, t in zip(self.level_convs, terms[:3])]
        return levels + [level4]

    @staticmethod
    def num_units(orders: int) -> int:
        return sum(4 - o for o in range(orders))
