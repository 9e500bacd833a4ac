"""U-Net with a classification encoder (MONAI ``FlexibleUNet``): the segmentation_models_pytorch-style
baseline that most polyp and skin benchmarks train (ResNet-34 encoder, decoder 256-128-64-32-16).

Always built from scratch here (``pretrained`` ImageNet encoders would be downloaded by MONAI; medseg
never downloads weights inside a model builder). Input sides must be multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medseg.models._registry import register_model
from medseg.models._wrappers import TensorToSegOutput


@register_model("flexible_unet", paper="U-Net with a ResNet / EfficientNet encoder (MONAI FlexibleUNet)",
                default_size=(224, 224), stride=32)
def flexible_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    backbone: str = "resnet34",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """FlexibleUNet(``backbone``) with nearest-neighbour upsampling, randomly initialised."""
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        backbone=backbone,
        pretrained=False,
        decoder_channels=tuple(decoder_channels),
        spatial_dims=2,
        norm=norm,
        dropout=dropout,
    )
    return TensorToSegOutput(net, stride=32, name="flexible_unet")
