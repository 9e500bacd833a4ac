"""Attention U-Net (Oktay et al., MIDL 2018) through MONAI's ``AttentionUnet``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medseg.models._registry import register_model
from medseg.models._wrappers import TensorToSegOutput


@register_model("attention_unet", paper="Attention U-Net (Oktay et al., MIDL 2018), MONAI", default_size=(224, 224), stride=16)
def attention_unet(
    in_channels: int = 1,
    out_channels: int = 1,
    channels: Sequence[int] = (64, 128, 256, 512, 1024),
    dropout: float = 0.0,
) -> nn.Module:
    """U-Net with additive attention gates on the skips (MONAI AttentionUnet)."""
    from monai.networks.nets import AttentionUnet

    net = AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        dropout=dropout,
    )
    return TensorToSegOutput(net, stride=2 ** (len(channels) - 1), name="attention_unet")
