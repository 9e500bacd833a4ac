"""U-Net baseline (Ronneberger et al., MICCAI 2015) through MONAI's ``BasicUNet``.

Classic widths 64-128-256-512-1024 with two conv3x3-BN-ReLU per level, max-pooling and transposed
convolutions; ``features`` changes the widths (six numbers: five encoder levels and the last decoder).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medseg.models._registry import register_model
from medseg.models._wrappers import TensorToSegOutput


@register_model("unet", paper="U-Net (Ronneberger et al., MICCAI 2015), MONAI BasicUNet", default_size=(224, 224), stride=16)
def unet(
    in_channels: int = 1,
    out_channels: int = 1,
    features: Sequence[int] = (64, 128, 256, 512, 1024, 64),
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """U-Net (MONAI BasicUNet): 4 poolings, transposed-conv upsampling."""
    from monai.networks.nets import BasicUNet

    net = BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        norm=norm,
        dropout=dropout,
        upsample="deconv",
    )
    return TensorToSegOutput(net, stride=16, name="unet")
