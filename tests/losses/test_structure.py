"""Structure loss (weighted BCE + weighted IoU) against hand computations in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.losses import build_loss
from medseg.losses.structure import StructureLoss, boundary_weight


def _np_avgpool_same(mask: np.ndarray, k: int = 31) -> np.ndarray:
    """k x k mean with zero padding counted in the denominator (count_include_pad=True)."""
    r = k // 2
    padded = np.pad(mask, r)
    out = np.empty_like(mask)
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            out[i, j] = padded[i : i + k, j : j + k].sum() / (k * k)
    return out


def _np_structure(logits: np.ndarray, mask: np.ndarray, legacy: bool = False) -> float:
    """Per image [H, W] arrays in a list -> the batch loss, written out from the definition."""
    per_image = []
    all_bce = []
    for x, g in zip(logits, mask, strict=True):
        w = 1 + 5 * np.abs(_np_avgpool_same(g) - g)
        bce = np.maximum(x, 0) - x * g + np.log1p(np.exp(-np.abs(x)))
        all_bce.append(bce)
        p = 1 / (1 + np.exp(-x))
        inter = (w * p * g).sum()
        union = (w * (p + g)).sum()
        wiou = 1 - (inter + 1) / (union - inter + 1)
        per_image.append(((w * bce).sum() / w.sum(), wiou))
    if legacy:
        mean_bce = np.mean(np.stack(all_bce))
        return float(np.mean([mean_bce + wiou for _, wiou in per_image]))
    return float(np.mean([wbce + wiou for wbce, wiou in per_image]))


def test_4x4_by_hand() -> None:
    g = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float64)
    x = np.array(
        [[-2.0, -1.0, 0.0, -3.0], [-1.0, 2.0, 1.0, 0.5], [0.0, 3.0, -0.5, -1.0], [-2.0, 0.0, -1.0, -4.0]]
    )
    # On a 4x4 image every 31x31 window (padding 15) covers the whole image: pooled = 4 / 961 everywhere.
    w = 1 + 5 * np.abs(4 / 961 - g)
    assert np.allclose(w[1, 1], 1 + 5 * (1 - 4 / 961)) and np.allclose(w[0, 0], 1 + 5 * 4 / 961)
    bce = np.maximum(x, 0) - x * g + np.log1p(np.exp(-np.abs(x)))
    p = 1 / (1 + np.exp(-x))
    wbce = (w * bce).sum() / w.sum()
    inter, union = (w * p * g).sum(), (w * (p + g)).sum()
    wiou = 1 - (inter + 1) / (union - inter + 1)

    logits = torch.tensor(x, dtype=torch.float32)[None, None]
    target = torch.tensor(g, dtype=torch.int64)[None]
    assert torch.allclose(
        boundary_weight(target[:, None].float())[0, 0], torch.tensor(w, dtype=torch.float32)
    )
    got = StructureLoss()(logits, target)
    assert got.item() == pytest.approx(wbce + wiou, rel=1e-6)
    legacy = StructureLoss(legacy_pranet_bug=True)(logits, target)
    assert legacy.item() == pytest.approx(bce.mean() + wiou, rel=1e-6)
    assert abs(got.item() - legacy.item()) > 1e-3  # non-uniform weights: the two definitions differ


def test_batch_and_larger_image_against_numpy() -> None:
    rng = np.random.default_rng(0)
    g = np.zeros((2, 40, 36))
    g[0, 5:25, 8:30] = 1
    g[1, 20:38, 2:14] = 1
    x = rng.normal(0, 2, size=g.shape)
    logits = torch.tensor(x, dtype=torch.float32)[:, None]
    target = torch.tensor(g).long()
    assert build_loss("structure")(logits, target).item() == pytest.approx(_np_structure(x, g), rel=1e-5)
    legacy = build_loss("structure", legacy_pranet_bug=True)(logits, target).item()
    assert legacy == pytest.approx(_np_structure(x, g, legacy=True), rel=1e-5)


def test_uniform_weights_make_legacy_equal() -> None:
    logits = torch.randn(2, 1, 8, 8)
    target = torch.zeros(2, 8, 8, dtype=torch.long)  # empty masks: w == 1 everywhere
    assert torch.allclose(
        StructureLoss()(logits, target), StructureLoss(legacy_pranet_bug=True)(logits, target)
    )


def test_soft_targets_gradient_and_errors() -> None:
    logits = torch.randn(1, 1, 8, 8, requires_grad=True)
    soft = torch.rand(1, 8, 8)  # the official pipeline's bilinear-resized masks are soft
    StructureLoss()(logits, soft).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="binary loss"):
        StructureLoss()(torch.randn(1, 2, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="0/1 labels"):
        StructureLoss()(torch.randn(1, 1, 8, 8), torch.full((1, 8, 8), 2, dtype=torch.long))
