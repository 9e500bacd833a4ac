"""The fast inference path equals the plain path: Conv+BN folding, channels_last, fixed-filter fast mode."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from medseg.engine.fast import (
    calibrate_batchnorm,
    fold_conv_bn,
    optimize_for_inference,
    set_fixed_filter_fast,
)
from medseg.models import build_model, get_entry, model_names

TOL = 1e-4
# FCN's ResNet-50 (53 BatchNorms calibrated on one 16x24 image) is ill-conditioned at this size: the plain float32
# forward itself differs from the float64 reference by 1.4e-3 at logits ~0.5 (the fast path by 6e-4).
MODEL_TOL = {"fcn": 2e-3}


def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    bn.running_mean.copy_(torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn


def _count(model: nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def test_fold_sequential_pairs_exactly():
    torch.manual_seed(0)
    # ConvNormAct-like, a nested Sequential (MONAI Convolution(conv, ADN(norm, ..))), and a transposed conv
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), _bn(8, 1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Sequential(_bn(8, 2), nn.Dropout(0.0), nn.ReLU())),
        nn.ConvTranspose2d(8, 4, 2, stride=2), _bn(4, 3),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    assert fold_conv_bn(model) == 3
    assert _count(model, nn.BatchNorm2d) == 0
    assert torch.allclose(model(x), ref, atol=1e-5)


class _HandWired(nn.Module):
    """conv1 -> bn1 wired in forward (foldable); conv2 whose output also feeds a residual (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), _bn(4, 4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), _bn(4, 5)
        self.post = _bn(4, 6)  # a BN after a functional op: never touched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        c = self.conv2(h)
        return self.post(self.bn2(c) + c)


def test_fold_traced_pairs_only_when_safe():
    model = _HandWired().eval()
    x = torch.randn(1, 3, 8, 8)
    ref = model(x)
    assert fold_conv_bn(copy.deepcopy(model)) == 0  # no Sequential: nothing without an example input
    folded = copy.deepcopy(model)
    assert fold_conv_bn(folded, example_input=x) == 1
    assert isinstance(folded.bn1, nn.Identity)
    assert isinstance(folded.bn2, nn.BatchNorm2d)  # conv2's output has a second use
    assert isinstance(folded.post, nn.BatchNorm2d)
    assert torch.allclose(folded(x), ref, atol=1e-5)


def test_fold_skips_shared_modules_and_training_mode():
    conv, bn = nn.Conv2d(2, 2, 1), _bn(2, 7)
    model = nn.Sequential(nn.Sequential(conv, bn), nn.Sequential(conv, bn)).eval()  # used twice
    assert fold_conv_bn(model) == 0
    with pytest.raises(ValueError, match="eval mode"):
        fold_conv_bn(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


def test_channels_last_and_compile_fallback(monkeypatch, caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _bn(4, 8), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    ref = model(x)

    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    fast = optimize_for_inference(copy.deepcopy(model), channels_last=True, compile=True)
    with caplog.at_level(logging.WARNING, logger="medseg.engine.fast"), torch.inference_mode():
        out = fast(x)  # contiguous input: the pre-hook makes it channels_last
        again = fast(x)
    assert "falling back to eager" in caplog.text
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-5) and torch.equal(out, again)
    assert set(fast.state_dict()) == {"0.weight", "0.bias"}  # BN folded away, no wrapper prefix


# Every registered model: the fast path (fold + channels_last + fixed filters as channel sum + box)
# against the plain path (no folding, literal full all-ones convolutions). The plain path runs in
# float64, i.e. its exact value: in float32 M2SNet's literal 64x64x5x5 all-ones convolutions are
# themselves off by up to ~2e-4 at logits O(1) (summing 1600 positive terms), the fast path ~5e-5.
@pytest.mark.parametrize("name", model_names())
def test_fast_path_equals_plain_path(name):
    torch.manual_seed(0)
    stride = get_entry(name).stride
    x = torch.randn(1, 3, 2 * stride, 3 * stride)
    plain = build_model(name, in_channels=3, out_channels=2)
    n_filters = set_fixed_filter_fast(plain, False)
    calibrate_batchnorm(plain, x, seed=1)
    n_bn = _count(plain, nn.BatchNorm2d)
    fast = copy.deepcopy(plain)
    with torch.inference_mode():
        ref = copy.deepcopy(plain).double()(x.double()).logits
    set_fixed_filter_fast(fast, True)
    optimize_for_inference(fast, channels_last=True, fold_bn=True, example_input=x)
    with torch.inference_mode():
        out = fast(x).logits
    diff = (out.double() - ref).abs().max().item()
    assert out.shape == (1, 2, 2 * stride, 3 * stride)
    assert diff <= MODEL_TOL.get(name, TOL), f"{name}: fast path differs from the plain path by {diff:.3g}"
    if n_bn:
        assert _count(fast, nn.BatchNorm2d) < n_bn, f"{name}: no Conv+BN pair was folded"
    if n_filters:  # the fast path kept the fixed filters' own (shared) BNs
        assert all(f.fast and isinstance(f.norm, nn.BatchNorm2d) for f in fast.modules() if hasattr(f, "kernel"))


@pytest.mark.skipif("mgrad_unet" not in model_names(), reason="mgrad_unet not registered yet")
def test_fast_path_with_mgrad_feedback_passes():
    """Folding is traced without feedback; the test-time feedback passes must still match."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 48)
    plain = calibrate_batchnorm(build_model("mgrad_unet", in_channels=3, out_channels=4), x)

    def run(model, inp):
        feedback = None
        with torch.inference_mode():
            for _ in range(3):
                out = model(inp, feedback=feedback)
                feedback = out.extras.get("feedback")
        return out.logits

    ref = run(copy.deepcopy(plain).double(), x.double())
    fast = optimize_for_inference(copy.deepcopy(plain), example_input=x)
    assert (run(fast, x).double() - ref).abs().max().item() <= TOL


def test_training_in_channels_last_matches_contiguous():
    """``trainer.channels_last``: SegTask's model is NHWC, and a training step's loss and gradients equal the
    contiguous model's (same weights) to float tolerance."""
    from medseg.config import Config
    from medseg.engine.task import SegTask

    cfg = {"data": {"num_classes": 2, "in_channels": 3, "batch_size": 2},
           "model": {"name": "unet", "kwargs": {"features": [4, 4, 8, 8, 8, 4]}}, "loss": {"terms": [{"loss": "dice_ce"}]}}
    torch.manual_seed(0)
    plain = SegTask(Config.model_validate(cfg))
    nhwc = SegTask(Config.model_validate({**cfg, "trainer": {"channels_last": True}}))
    nhwc.model.load_state_dict(plain.model.state_dict())
    conv = next(m for m in nhwc.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[1] > 1
    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 32, 32) > 0.5).long()
    losses = []
    for task in (plain, nhwc):
        loss, _ = task.criterion(task.model(x), y)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(plain.model.named_parameters(), nhwc.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
