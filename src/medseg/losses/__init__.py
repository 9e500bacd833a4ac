"""Losses: Dice/CE (MONAI), the papers' losses, and the config-built criterion."""

from medseg.losses._registry import add_member_loader, build_loss, loss_names, register_loss
from medseg.losses.criterion import Criterion, resize_target

__all__ = ["Criterion", "build_loss", "loss_names", "register_loss", "resize_target"]


def _import_losses() -> None:
    """Import the loss modules (on the registry's first lookup); their ``@register_loss`` decorators register them."""
    from medseg.losses import aggregated, compound, perceptual, structure  # noqa: F401


add_member_loader(_import_losses)
