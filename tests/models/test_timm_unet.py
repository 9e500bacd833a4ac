"""timm_unet: the smp-style U-Net (timm encoder + MONAI FlexibleUNet decoder)."""

from __future__ import annotations

import pytest
import torch

from medseg.config import ConfigError
from medseg.models import build_model


def test_local_imagenet_file_loads_every_encoder_tensor(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False).state_dict()  # the ImageNet file's layout (with fc)
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)
    model = build_model("timm_unet", 3, 1, backbone="resnet18", pretrained=str(path))
    own = model.encoder.model.state_dict()
    assert all(torch.equal(own[k], source[k]) for k in own)
    assert not torch.equal(build_model("timm_unet", 3, 1, backbone="resnet18").encoder.model.conv1.weight,
                           source["conv1.weight"])  # random by default


def test_skips_join_at_strides_2_to_16_and_the_output_is_full_size():
    model = build_model("timm_unet", 1, 3, backbone="resnet18", decoder_channels=[32, 16, 16, 8, 8])
    out = model(torch.randn(2, 1, 64, 96))
    assert out.logits.shape == (2, 3, 64, 96) and model.encoder.reductions == [2, 4, 8, 16, 32]
    with pytest.raises(ConfigError, match="decoder_channels: five widths"):
        build_model("timm_unet", 3, 1, decoder_channels=[16, 8])
