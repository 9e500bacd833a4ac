"""The session-wide guard of tests/conftest.py: no test can download weights."""

from __future__ import annotations

import pytest
import torch


def test_torch_hub_downloads_raise() -> None:
    with pytest.raises(RuntimeError, match="tests must not download weights"):
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/vgg16-397923af.pth")
    with pytest.raises(RuntimeError, match="tests must not download weights"):
        torch.hub.download_url_to_file("https://example.invalid/w.pth", "/nonexistent/w.pth")


def test_torchvision_weights_raise() -> None:
    from torchvision.models import VGG16_Weights

    with pytest.raises(RuntimeError, match="tests must not download weights"):
        VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)


def test_timm_pretrained_raises_through_our_loader() -> None:
    from medseg.models._backbones import TimmEncoder

    # the guard's RuntimeError, reported in medseg's one-line weight error
    with pytest.raises(Exception, match=r"could not fetch timm's ImageNet weights .*\(RuntimeError\)"):
        TimmEncoder("resnet18", in_channels=3, pretrained=True)


def test_lossnet_imagenet_weights_raise_a_clear_error() -> None:
    from medseg.losses.perceptual import LossNet

    with pytest.raises(Exception, match=r"LossNet: could not fetch .*VGG-16 .*RuntimeError"):
        LossNet(weights="imagenet")
