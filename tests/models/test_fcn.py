"""FCN baseline (MDA-U-Net Table 1) through torchvision's fcn_resnet50: channels adapted, shapes, gradients."""

from __future__ import annotations

import torch

from medseg.models import build_model, count_parameters


def test_fcn_equals_torchvision_and_adapts_input_channels() -> None:
    from torchvision.models.segmentation import fcn_resnet50

    with torch.device("meta"):
        ref = count_parameters(fcn_resnet50(weights=None, weights_backbone=None, num_classes=3, aux_loss=False))
        assert count_parameters(build_model("fcn", in_channels=3, out_channels=3)) == ref
        # one CT channel: the stem's 7x7 conv reads 1 channel instead of 3 (64 * 2 * 49 fewer weights)
        assert count_parameters(build_model("fcn", in_channels=1, out_channels=3)) == ref - 64 * 2 * 49
    torch.manual_seed(0)
    model = build_model("fcn", in_channels=1, out_channels=3)
    assert model.net.backbone.conv1.in_channels == 1
    out = model(torch.randn(1, 1, 16, 24))
    assert out.logits.shape == (1, 3, 16, 24) and out.aux == {}  # logits at input size, no aux head
    out.logits.mean().backward()
    assert model.net.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.net.classifier[-1].weight.grad.abs().sum() > 0
