"""FCN baseline (Long et al., CVPR 2015) through torchvision's ``fcn_resnet50``.

MDA-U-Net's Table 1 compares against "FCN [16]" without naming its backbone; we use torchvision's FCN
with a ResNet-50 backbone (dilated: output stride 8) and its FCNHead (3x3 conv 2048 -> 512, BN, ReLU,
dropout 0.1, 1x1 conv to ``out_channels``), upsampled bilinearly to the input size. Built with
``weights=None, weights_backbone=None`` (no download; random initialisation, as every other baseline
here) and without torchvision's auxiliary head (``aux_loss=False``), so the state_dict is fixed.
``in_channels != 3`` replaces the stem's first 7x7 convolution by one with that many input channels.
"""

from __future__ import annotations

from torch import Tensor, nn

from medseg.layers.resize import check_input_size
from medseg.models._output import SegOutput
from medseg.models._registry import register_model


class _FCN(nn.Module):
    """torchvision's FCN (returns ``{"out": logits}``) under the :class:`SegOutput` contract."""

    def __init__(self, net: nn.Module, stride: int = 8) -> None:
        super().__init__()
        self.net = net
        self.stride = stride

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, "fcn")
        return SegOutput(self.net(x)["out"])


@register_model("fcn", paper="FCN (Long et al., CVPR 2015), torchvision fcn_resnet50", default_size=(224, 224), stride=8)
def fcn(in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """FCN with a dilated ResNet-50 backbone (torchvision fcn_resnet50, no pretrained weights)."""
    from torchvision.models.segmentation import fcn_resnet50

    net = fcn_resnet50(weights=None, weights_backbone=None, num_classes=out_channels, aux_loss=False)
    if in_channels != 3:
        old = net.backbone.conv1
        net.backbone.conv1 = nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size,
                                       stride=old.stride, padding=old.padding, bias=False)
    return _FCN(net)
