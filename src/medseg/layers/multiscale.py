"""Multi-scale context blocks shared by several models.

``RFB``: the receptive field block as PraNet modified it (``RFB_modified`` in
``DengPingFan/PraNet:lib/PraNet_Res2Net.py``; origin: Liu et al., "Receptive Field Block Net", ECCV 2018).
Used by MGRAD-UNet (Eq. 8, Fig. 8) on every encoder level and by the PraNet family.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct

__all__ = ["RFB"]


class RFB(nn.Module):
    """PraNet's ``RFB_modified``: four parallel branches, concat, 3x3 fusion, 1x1 residual, ReLU.

    Branches (every conv is bias-free conv + BN, PraNet's ``BasicConv2d``):

    - ``branch0``: 1x1
    - ``branch1``: 1x1 -> 1x3 -> 3x1 -> 3x3 dilation 3
    - ``branch2``: 1x1 -> 1x5 -> 5x1 -> 3x3 dilation 5
    - ``branch3``: 1x1 -> 1x7 -> 7x1 -> 3x3 dilation 7

    ``out = ReLU(conv_cat(cat(b0, b1, b2, b3)) + conv_res(x))`` with ``conv_cat`` a 3x3 conv from
    ``4 * out_channels`` and ``conv_res`` a 1x1 conv.

    Args:
        in_channels: input width.
        out_channels: output width (and the width of every branch).
        act: activation after every inner conv + BN. ``None`` is PraNet's ``BasicConv2d`` (conv + BN
            only) and the default; ``"relu"`` is MGRAD-UNet's ``my_net_addRA.py`` copy, whose
            ``BasicConv2d`` adds a ReLU (including on ``conv_cat`` and ``conv_res``). The parameter
            count is the same either way: ``5*in*out + 93*out^2 + 30*out``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, act: str | None = None) -> None:
        super().__init__()

        def bconv(
            cin: int,
            kernel_size: int | tuple[int, int],
            dilation: int = 1,
        ) -> ConvNormAct:
            return ConvNormAct(
                cin, out_channels, kernel_size, dilation=dilation, bias=False, norm="bn", act=act
            )

        def branch(k: int) -> nn.Sequential:
            return nn.Sequential(
                bconv(in_channels, 1),
                bconv(out_channels, (1, k)),
                bconv(out_channels, (k, 1)),
                bconv(out_channels, 3, dilation=k),
            )

        self.branch0 = nn.Sequential(bconv(in_channels, 1))
        self.branch1 = branch(3)
        self.branch2 = branch(5)
        self.branch3 = branch(7)
        self.conv_cat = bconv(4 * out_channels, 3)
        self.conv_res = bconv(in_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return self.relu(self.conv_cat(torch.cat(branches, dim=1)) + self.conv_res(x))
