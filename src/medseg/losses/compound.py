"""Dice, cross-entropy and their weighted sum -- the workhorse losses, built on MONAI / torch.

Binary tasks have one output channel (sigmoid, BCE); K-class tasks have K channels (softmax, CE).
``dice`` defaults to TransUNet's DiceLoss (``utils.py``): softmax, per class *including* background
1 - (2 sum pg + 1e-5) / (sum p^2 + sum g^2 + 1e-5) over the whole batch, averaged over classes, which
MONAI's ``DiceLoss(squared_pred=True, batch=True, include_background=True, smooth=1e-5)`` computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.losses._registry import register_loss


def _dice_impl(squared: bool, batch: bool, include_background: bool, smooth: float, sigmoid: bool) -> nn.Module:
    from monai.losses import DiceLoss

    return DiceLoss(
        sigmoid=sigmoid,
        softmax=not sigmoid,
        to_onehot_y=not sigmoid,
        squared_pred=squared,
        batch=batch,
        include_background=include_background,
        smooth_nr=smooth,
        smooth_dr=smooth,
    )


@register_loss("dice")
class DiceLoss(nn.Module):
    """Soft Dice on sigmoid (1 channel) or softmax (K channels) probabilities (MONAI)."""

    def __init__(
        self,
        squared: bool = True,
        batch: bool = True,
        include_background: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kw = dict(squared=squared, batch=batch, include_background=include_background, smooth=smooth)
        self._impl: dict[bool, nn.Module] = {}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        sigmoid = logits.shape[1] == 1
        if sigmoid not in self._impl:
            self._impl[sigmoid] = _dice_impl(sigmoid=sigmoid, **self.kw)
        return self._impl[sigmoid](logits.float(), target.unsqueeze(1).to(logits.dtype if sigmoid else torch.long))


@register_loss("ce")
class CELoss(nn.Module):
    """Cross-entropy for K channels; binary cross-entropy with logits for one channel."""

    def __init__(self, class_weights: list[float] | None = None, pos_weight: float | None = None) -> None:
        super().__init__()
        self.class_weights = class_weights
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            pw = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=pw)
        w = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
        return F.cross_entropy(logits, target.long(), weight=w)


register_loss("bce")(CELoss)


@register_loss("dice_ce")
class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` (TransUNet: 0.5/0.5; CASCADE/MGRAD code: CE 0.3, Dice 0.7)."""

    def __init__(self, ce_weight: float = 0.5, dice_weight: float = 0.5, **dice_kwargs: object) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ce = CELoss()
        self.dice = DiceLoss(**dice_kwargs)  # type: ignore[arg-type]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def region_targets(target: Tensor, channels: int) -> Tensor:
    """int64 label map ``[B, H, W]`` -> float ``[B, channels, H, W]`` with channel k = (label >= k + 1)."""
    levels = torch.arange(1, channels + 1, device=target.device).view(1, -1, 1, 1)
    return (target.unsqueeze(1) >= levels).float()


@register_loss("region_bce")
class RegionBCELoss(nn.Module):
    """BCE with logits on nested region targets (``data.targets: regions``): channel k of the C logits is
    trained towards ``label >= k + 1`` (MDA-U-Net Eq. 6-7: organ incl. tumour, tumour), mean over channels
    and pixels (``F.binary_cross_entropy_with_logits``)."""

    targets = "regions"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, region_targets(target, logits.shape[1]))
