"""Subtraction / addition units and the fixed filters of layers/fusion.py, against hand values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.layers.fusion import FixedFilter, SubtractionPyramid


def _features(channels: int = 2) -> list[torch.Tensor]:
    """Five features, finest first (16, 8, 4, 2, 1 px), with values of both signs."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, channels, 16 // 2**i, 16 // 2**i, generator=g) for i in range(5)]


def test_add_unit_adds_where_su_subtracts() -> None:
    a = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    b = torch.tensor([[[[4.0, 1.0], [-3.0, 0.5]]]])
    add, su = SubtractionPyramid(1, unit="add"), SubtractionPyramid(1, unit="su")
    assert torch.equal(add.difference(a, b), torch.tensor([[[[5.0, -1.0], [0.0, 1.0]]]]))
    assert torch.equal(su.difference(a, b), torch.tensor([[[[3.0, 3.0], [6.0, 0.0]]]]))


@pytest.mark.parametrize(("unit", "combine"), [("add", torch.add), ("su", lambda a, b: (a - b).abs())])
def test_first_order_unit_input_in_the_forward_pass(unit: str, combine) -> None:
    # x2_1 (units[0][0]) must see D(up(f2), f1): a + b for ``add``, |a - b| for ``su``
    pyr = SubtractionPyramid(2, unit=unit, orders=1).eval()
    seen = {}
    pyr.units[0][0].register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    f = _features()
    with torch.no_grad():
        pyr(f)
    up = F.interpolate(f[1], size=f[0].shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen["x"], combine(up, f[0]), rtol=0, atol=1e-6)


def test_gaussian_3x3_weights_by_hand() -> None:
    # k = 3: sigma = 0.3 * ((3 - 1) * 0.5 - 1) + 0.8 = 0.8; 1D weights exp(-x^2 / 1.28) for x = -1, 0, 1
    e = math.exp(-1 / 1.28)  # 0.45783...
    g = torch.tensor([e, 1.0, e], dtype=torch.float64) / (1 + 2 * e)
    expected = torch.outer(g, g)
    assert expected[1, 1].item() == pytest.approx(0.272496, abs=1e-6)
    kernel = FixedFilter(4, 3, weights="gaussian").kernel
    assert kernel.shape == (1, 1, 3, 3)
    torch.testing.assert_close(kernel[0, 0].double(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("k", [5, 7])
def test_gaussian_weights_use_the_documented_sigma(k: int) -> None:
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # OpenCV's default sigma for a k x k kernel (fusion.py)
    w = [[math.exp(-((i - k // 2) ** 2 + (j - k // 2) ** 2) / (2 * sigma**2)) for j in range(k)] for i in range(k)]
    total = sum(map(sum, w))
    expected = torch.tensor(w, dtype=torch.float64) / total
    kernel = FixedFilter(4, k, weights="gaussian").kernel[0, 0].double()
    torch.testing.assert_close(kernel, expected, rtol=0, atol=1e-7)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_filter_applies_its_weights() -> None:
    # depthwise filter of a unit impulse returns the kernel itself (it is symmetric)
    f = FixedFilter(1, 3, weights="gaussian", depthwise=True)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    torch.testing.assert_close(f._filter(x)[0, 0, 1:4, 1:4], f.kernel[0, 0], rtol=0, atol=1e-7)
