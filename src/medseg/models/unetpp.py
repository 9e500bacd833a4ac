"""UNet++ (Zhou et al., DLMIA 2018) through MONAI's ``BasicUNetPlusPlus``.

MONAI returns ``[x_0_1, x_0_2, x_0_3, x_0_4]``; the deepest, x_0_4, is ``logits`` and with
``deep_supervision`` (default) x_0_1..x_0_3 are ``aux["ds1".."ds3"]``; the heads exist either way, so the state_dict does not change.

``features`` has U-Net's form and default (:mod:`medseg.models.unet`: 64-128-256-512-1024 and 64 for the last
decoder level; MONAI's own default is 32-32-64-128-256-32), so a comparison of the two at default widths is
like for like (MDA-U-Net's Table 1 baselines, issue #14 item 5).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medseg.layers.resize import check_input_size
from medseg.models._output import SegOutput
from medseg.models._registry import register_model
from medseg.models._wrappers import TensorToSegOutput


@register_model("unetpp", paper="UNet++ (Zhou et al., DLMIA 2018), MONAI BasicUNetPlusPlus", default_size=(224, 224),
                stride=16, legacy_defaults=[{"features": (32, 32, 64, 128, 256, 32)}])  # MONAI's, until U-Net's widths
def unetpp(
    in_channels: int = 1,
    out_channels: int = 1,
    features: Sequence[int] = (64, 128, 256, 512, 1024, 64),
    deep_supervision: bool = True,
) -> nn.Module:
    """Nested U-Net with dense skip pathways (MONAI BasicUNetPlusPlus)."""
    from monai.networks.nets import BasicUNetPlusPlus

    net = BasicUNetPlusPlus(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        deep_supervision=True,  # always build every head; ``deep_supervision`` only decides what is returned
    )
    return _UNetPP(net, deep_supervision)


class _UNetPP(TensorToSegOutput):
    def __init__(self, net: nn.Module, deep_supervision: bool) -> None:
        super().__init__(net, stride=16, name="unetpp")
        self.deep_supervision = deep_supervision

    def forward(self, x: Tensor) -> SegOutput:  # type: ignore[override]
        check_input_size(x, self.stride, self.model_name)
        *shallow, deepest = self.net(x)
        aux = {f"ds{i}": t for i, t in enumerate(shallow, start=1)} if self.deep_supervision else {}
        return SegOutput(deepest, aux)
