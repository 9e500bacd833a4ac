"""LossNet (frozen VGG-16 perceptual loss) with a random VGG saved to a local file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medseg.losses import build_loss
from medseg.losses.perceptual import IMAGENET_MEAN, IMAGENET_STD, LossNet, _vgg16_features
from medseg.models._weights import WeightLoadError

VGG16_CFG_TO_RELU4_3 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-layout vgg16 state_dict (``features.N.*`` + a classifier entry), random weights."""
    torch.manual_seed(0)
    feats = _vgg16_features(23)
    sd = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    sd["features.24.weight"] = torch.zeros(1)  # deeper layers are ignored
    sd["classifier.0.weight"] = torch.zeros(1)  # so is the classifier
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def lossnet(vgg_file: tuple[Path, dict[str, torch.Tensor]]) -> LossNet:
    # resize=32 keeps the VGG passes cheap on CPU; the default 224 is checked in test_default_resize_is_224
    return build_loss("lossnet", weights=str(vgg_file[0]), resize=32)  # type: ignore[return-value]


def _direct_levels(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """VGG-16 up to relu4_3 written with functional ops from the file's tensors."""
    levels, i = [], 0
    for v in VGG16_CFG_TO_RELU4_3:
        if v == "M":
            levels.append(x)  # relu1_2, relu2_2, relu3_3 end right before each max-pool
            x = F.max_pool2d(x, 2, 2)
            i += 1
        else:
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))
            i += 2
    return levels + [x]


def test_loads_the_file_and_matches_a_direct_computation(lossnet: LossNet, vgg_file: tuple) -> None:
    _, sd = vgg_file
    assert torch.equal(lossnet.blocks[3][5].weight, sd["features.21.weight"])
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 40, 48)
    target = (torch.rand(2, 40, 48) > 0.5).long()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def prep(t: torch.Tensor) -> torch.Tensor:
        t = (t.repeat(1, 3, 1, 1) - mean) / std
        return F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)

    fp = _direct_levels(sd, prep(torch.sigmoid(logits)))
    fg = _direct_levels(sd, prep(target[:, None].float()))
    assert [f.shape[1:] for f in fp] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    per_level = [((a - b) ** 2).mean() for a, b in zip(fp, fg, strict=True)]
    # one level by hand against the module's own features
    ours = lossnet.level_features(lossnet._prepare(torch.sigmoid(logits)))
    assert torch.allclose(ours[0], fp[0], atol=1e-5)
    total = lossnet(logits, target)
    assert total.item() == pytest.approx(sum(v.item() for v in per_level), rel=1e-4)


def test_default_resize_is_224() -> None:
    loss = LossNet(allow_random=True)
    assert loss.resize == 224
    x = loss._prepare(torch.full((2, 1, 40, 48), 0.5))
    assert x.shape == (2, 3, 224, 224)
    # the map repeated to 3 channels and normalised with ImageNet mean/std
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 100, 7], expected, atol=1e-6)


def test_identical_inputs_give_zero(lossnet: LossNet) -> None:
    logits = torch.randn(1, 1, 32, 32)
    assert lossnet(logits, torch.sigmoid(logits)).item() == 0.0
    mask = (torch.rand(1, 32, 32) > 0.5).long()
    assert lossnet((mask[:, None].float() * 2 - 1) * 1000, mask).item() == 0.0  # saturated logits == mask


def test_frozen_no_parameters_eval_mode_and_buffers(lossnet: LossNet) -> None:
    assert list(lossnet.parameters()) == []
    assert lossnet.state_dict() == {}  # fixed VGG: not written into checkpoints
    lossnet.train()
    assert not lossnet.training and not any(m.training for m in lossnet.modules())
    buffers = dict(lossnet.named_buffers())
    assert torch.allclose(buffers["mean"].flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(buffers["std"].flatten(), torch.tensor(IMAGENET_STD))
    logits = torch.randn(1, 1, 16, 16, requires_grad=True)
    lossnet(logits, (torch.rand(1, 16, 16) > 0.5).long()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_refuses_without_weights_unless_allowed() -> None:
    with pytest.raises(ValueError, match="LossNet needs ImageNet VGG-16 weights"):
        build_loss("lossnet")
    loss = build_loss("lossnet", allow_random=True, resize=None)
    assert torch.isfinite(loss(torch.randn(1, 1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long)))


def test_bad_files(tmp_path: Path, vgg_file: tuple) -> None:
    with pytest.raises(FileNotFoundError, match="VGG-16 weight file not found"):
        LossNet(weights=str(tmp_path / "missing.pth"))
    sd = {k: v for k, v in vgg_file[1].items() if k != "features.19.bias"}
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(
        WeightLoadError, match=r"partial\.pth: 19/20 expected tensors matched; 1 missing \(e\.g\. 19\.bias\)"
    ):
        LossNet(weights=str(tmp_path / "partial.pth"))
    with pytest.raises(ValueError, match="binary loss"):
        LossNet(allow_random=True)(torch.randn(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
