"""U-Net with a timm classification encoder: the segmentation_models_pytorch-style baseline that most polyp
and skin benchmarks train (``Unet("resnet34")``): timm's ResNet-34 (torchvision layout, 1x1-conv shortcuts)
as the encoder, MONAI's FlexibleUNet decoder (256-128-64-32-16, nearest upsampling, skips at strides
16/8/4/2) and segmentation head on top.

Not MONAI's own ``FlexibleUNet("resnet34")``: its MedicalNet ResNet uses zero-padded, detached
shortcuts (no gradient through them) whose padding the ONNX exporter freezes to one input size.
``pretrained``: ``None`` (random, the default), ``True`` (timm's ImageNet download) or a local file,
as the Res2Net backbone of M2SNet (:class:`~medseg.models._backbones.TimmEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from medseg.layers.resize import check_input_size
from medseg.models._backbones import TimmEncoder
from medseg.models._output import SegOutput
from medseg.models._registry import register_model


class TimmUNet(nn.Module):
    """timm encoder (5 feature levels, strides 2..32) + MONAI ``UNetDecoder`` + ``SegmentationHead``."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        backbone: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        pretrained: bool | str | Path | None = None,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder

        self.encoder = TimmEncoder(backbone, in_channels=in_channels, pretrained=pretrained, pooled_stem=False)
        if self.encoder.reductions != [2, 4, 8, 16, 32]:
            raise ValueError(f"backbone {backbone!r}: feature strides {self.encoder.reductions}, need 2, 4, 8, 16, 32")
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels: five widths (one per upsampling), got {list(decoder_channels)}")
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=(in_channels, *self.encoder.feature_channels),
            decoder_channels=tuple(decoder_channels),
            act=("relu", {"inplace": True}),
            norm=norm,
            dropout=dropout,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=False,  # sizes are multiples of 32 (checked), so no shape-dependent padding to trace
        )
        self.head = SegmentationHead(spatial_dims=2, in_channels=decoder_channels[-1], out_channels=out_channels,
                                     kernel_size=3, act=None)
        self.stride = 32

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, "timm_unet")
        return SegOutput(self.head(self.decoder([x, *self.encoder(x)], skip_connect=4)))


@register_model("timm_unet", paper="U-Net with a timm encoder (smp-style Unet: ResNet-34 + FlexibleUNet decoder)",
                default_size=(224, 224), stride=32)
def timm_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    backbone: str = "resnet34",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    pretrained: bool | str | None = None,
    norm: str = "batch",
    dropout: float = 0.0,
) -> TimmUNet:
    """smp-style U-Net: a timm encoder (ResNet-34 default, random unless ``pretrained``) and MONAI's decoder."""
    return TimmUNet(in_channels, out_channels, backbone, decoder_channels, pretrained, norm, dropout)
