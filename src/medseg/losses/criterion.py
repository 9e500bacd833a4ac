"""The training criterion: a weighted sum of loss terms on named model outputs.

Each term names one output (``logits`` or ``aux/<name>``) or several (``outputs: [...]`` for a loss
with ``multi_output = True``, e.g. the aggregated loss). Targets are resized (nearest) to each output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.config import ConfigError
from medseg.losses._registry import build_loss


def resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an int64 [B, H, W] label map."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


class Criterion(nn.Module):
    def __init__(self, terms: Sequence[object]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("loss.terms: the loss needs at least one term")
        self.specs = []
        losses = []
        for i, t in enumerate(terms):
            try:
                loss = build_loss(t.loss, **t.kwargs)  # type: ignore[attr-defined]
            except ConfigError as err:
                raise ConfigError(f"loss.terms[{i}]: {err}") from None
            multi = getattr(loss, "multi_output", False)
            outputs = t.outputs if t.outputs else [t.output]  # type: ignore[attr-defined]
            if multi and not t.outputs:  # type: ignore[attr-defined]
                raise ConfigError(f"loss.terms[{i}]: loss {t.loss!r} consumes several outputs: give 'outputs: [...]'")  # type: ignore[attr-defined]
            if not multi and len(outputs) != 1:
                raise ConfigError(f"loss.terms[{i}]: loss {t.loss!r} takes one output; got {outputs}")  # type: ignore[attr-defined]
            self.specs.append((t.loss, outputs, float(t.weight), multi))  # type: ignore[attr-defined]
            losses.append(loss)
        self.losses = nn.ModuleList(losses)

    @classmethod
    def from_config(cls, loss_cfg: object, targets: str | None = None) -> Criterion:
        """The criterion of ``loss_cfg``; with ``targets`` (``data.targets``) every term must fit them."""
        crit = cls(loss_cfg.terms)  # type: ignore[attr-defined]
        if targets is not None:
            crit.check_targets(targets)
        return crit

    def check_targets(self, targets: str) -> None:
        """Each loss must read the targets the data gives: a region loss (``region_bce``) needs
        ``data.targets: regions`` and every other loss ``classes`` (:class:`ConfigError` otherwise)."""
        for i, ((name, *_), loss) in enumerate(zip(self.specs, self.losses)):
            wants = getattr(loss, "targets", "classes")
            if wants != targets:
                hint = "region_bce" if targets == "regions" else "a class loss (dice_ce, ce, dice, ...)"
                raise ConfigError(f"loss.terms[{i}]: loss {name!r} needs data.targets: {wants}, but data.targets "
                                  f"is {targets}: use {hint}")

    def forward(self, output: object, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the total loss and each weighted term (for logging), keyed ``loss/output``."""
        total = torch.zeros((), device=target.device)
        parts: dict[str, Tensor] = {}
        cache: dict[tuple[int, int], Tensor] = {}

        def tgt(size: tuple[int, int]) -> Tensor:
            if size not in cache:
                cache[size] = resize_target(target, size)
            return cache[size]

        for (name, outputs, weight, multi), loss in zip(self.specs, self.losses):
            preds = [output.get(o) for o in outputs]  # type: ignore[attr-defined]
            if multi:
                value = loss(preds, tgt(tuple(preds[0].shape[-2:])))
            else:
                value = loss(preds[0], tgt(tuple(preds[0].shape[-2:])))
            key = f"{name}/{'+'.join(outputs)}" if len(outputs) < 3 else f"{name}/{len(outputs)}outputs"
            parts[key] = (weight * value).detach()
            total = total + weight * value
        return total, parts
