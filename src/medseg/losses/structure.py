"""Structure loss: boundary-weighted BCE + weighted IoU (F3Net, PraNet, MSNet/M2SNet Eq. 4).

Per-pixel weight ``w = 1 + 5 * |avgpool31(g) - g|`` (stride 1, padding 15, zero padding counted in
the average as ``F.avg_pool2d``'s default ``count_include_pad=True``), then per image

    wBCE = sum(w * bce(p, g)) / sum(w)
    wIoU = 1 - (sum(w * p * g) + 1) / (sum(w * (p + g)) - sum(w * p * g) + 1),   p = sigmoid(logits)

and the loss is ``mean over the batch of (wBCE + wIoU)``.

The official PraNet and MSNet code calls ``binary_cross_entropy_with_logits(..., reduce='none')``:
``reduce`` is a legacy flag and any non-empty string is truthy, so PyTorch averages the BCE to one
scalar and the weights cancel. ``legacy_pranet_bug=True`` reproduces that (plain mean BCE over
the batch + weighted IoU); the class default is the loss the papers define, the polyp recipes
use the official form by default (NOTES §7 items 7-8; preset ``paper_text`` for the weighted BCE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.losses._registry import register_loss


def _binary_target(logits: Tensor, target: Tensor, name: str) -> Tensor:
    """``target`` [B, h, w] (int labels or soft float masks) or [B, 1, h, w] -> float [B, 1, h, w]."""
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(
            f"{name} is a binary loss: it needs logits with 1 channel [B, 1, H, W], got {tuple(logits.shape)} "
            "(use dice/ce for multi-class outputs)"
        )
    if target.ndim == 3:
        target = target[:, None]
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"{name}: target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    if not target.is_floating_point():
        if bool((target > 1).any()) or bool((target < 0).any()):
            raise ValueError(
                f"{name}: binary target must hold 0/1 labels, got values up to {int(target.max())}"
            )
    return target.float()


def boundary_weight(mask: Tensor, kernel_size: int = 31, edge_weight: float = 5.0) -> Tensor:
    """``1 + edge_weight * |avgpool_k(mask) - mask|`` (stride 1, "same" zero padding)."""
    pooled = F.avg_pool2d(mask, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
    return 1 + edge_weight * (pooled - mask).abs()


@register_loss("structure")
class StructureLoss(nn.Module):
    """Weighted BCE + weighted IoU on one-channel logits (see the module docstring).

    Args:
        kernel_size: averaging window of the boundary weight (31 in every paper using it).
        edge_weight: factor of the boundary term (5).
        legacy_pranet_bug: reproduce the official code's unweighted BCE.
    """

    def __init__(
        self, kernel_size: int = 31, edge_weight: float = 5.0, legacy_pranet_bug: bool = False
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"structure loss: kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.edge_weight = edge_weight
        self.legacy_pranet_bug = legacy_pranet_bug

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        mask = _binary_target(logits, target, "structure loss")
        logits = logits.float()
        w = boundary_weight(mask, self.kernel_size, self.edge_weight)
        if self.legacy_pranet_bug:
            wbce = F.binary_cross_entropy_with_logits(logits, mask)  # one scalar: the weights cancel
        else:
            bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
            wbce = (w * bce).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
        p = torch.sigmoid(logits)
        inter = (w * p * mask).sum(dim=(2, 3))
        union = (w * (p + mask)).sum(dim=(2, 3))
        wiou = 1 - (inter + 1) / (union - inter + 1)
        return (wbce + wiou).mean()
