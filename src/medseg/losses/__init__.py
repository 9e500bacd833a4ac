"""Losses: Dice/CE (MONAI), the papers' losses, and the config-built criterion."""

from medseg.losses._registry import build_loss, loss_names, register_loss
from medseg.losses.criterion import Criterion, resize_target

__all__ = ["Criterion", "build_loss", "loss_names", "register_loss", "resize_target"]
