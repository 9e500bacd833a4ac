"""MGRAD-UNet's multi-output losses: the aggregated loss (Eq. 11, Algorithm 1) and the weighted loss (Eq. 13).

Both take the n side outputs (``loss([side_1, .., side_n], target)``, ``multi_output = True``) and apply a
base loss, Eq. 9: ``ce_weight * CE + dice_weight * Dice`` (``dice_ce``). The author's code
(``iPARTyS/Differential-Network:trainer.py``, ``train_ACDC.py``) uses CE 0.3 / Dice 0.7 -- our default;
the paper text (Eq. 9: lambda_1 = 0.3 for Dice, lambda_2 = 0.7 for CE) reverses them -- ``paper_weights=True``.
Explicit ``ce_weight`` / ``dice_weight`` override either. Dice is TransUNet's (``dice`` loss defaults), as in
the code; ``dice_kwargs`` go to it.

- ``aggregated``: ``sum over the 2^n - 1 non-empty subsets S of base(sum_{i in S} side_i, target)``
  (Algorithm 1: the logits of a subset are summed, then the loss is taken; ``trainer.py`` over the five
  SideConv outputs = 31 terms). A plain sum, no normalisation (the paper has none).
- ``weighted``: ``sum_i w_i * base(side_i, target)`` (Eq. 13); ``weights`` default to 1 (``train_ACDC.py``).

The supervised loss on the two decoders (Eq. 10) is two ordinary ``dice_ce`` terms of the recipe.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from medseg.losses._registry import register_loss
from medseg.losses.compound import DiceCELoss

CODE_WEIGHTS = (0.3, 0.7)  # (CE, Dice): trainer.py / train_ACDC.py, as CASCADE
PAPER_WEIGHTS = (0.7, 0.3)  # (CE, Dice): Eq. 9 as printed (lambda_1 = 0.3 Dice, lambda_2 = 0.7 CE)
MAX_OUTPUTS = 10  # 2^10 - 1 = 1023 loss terms; the paper uses n = 5


def _base_loss(
    ce_weight: float | None, dice_weight: float | None, paper_weights: bool, dice_kwargs: dict[str, object]
) -> DiceCELoss:
    ce, dice = PAPER_WEIGHTS if paper_weights else CODE_WEIGHTS
    return DiceCELoss(
        ce_weight=ce if ce_weight is None else ce_weight,
        dice_weight=dice if dice_weight is None else dice_weight,
        **dice_kwargs,
    )


def _check_outputs(preds: Sequence[Tensor], name: str) -> None:
    if isinstance(preds, Tensor) or not preds:
        raise ValueError(f"{name}: expects a non-empty list of logits [B, C, H, W] (use 'outputs: [...]')")
    shape = preds[0].shape
    for i, p in enumerate(preds):
        if p.shape != shape:
            raise ValueError(
                f"{name}: all outputs must have the same shape (they are summed); output {i} has "
                f"{tuple(p.shape)}, output 0 has {tuple(shape)}"
            )


def nonempty_subsets(n: int) -> Iterator[tuple[int, ...]]:
    """All 2^n - 1 non-empty subsets of ``range(n)``, by size then lexicographically."""
    for r in range(1, n + 1):
        yield from itertools.combinations(range(n), r)


@register_loss("aggregated")
class AggregatedLoss(nn.Module):
    """Sum over every non-empty subset S of the outputs of ``base(sum_{i in S} logits_i, target)`` (Eq. 11)."""

    multi_output = True

    def __init__(
        self,
        ce_weight: float | None = None,
        dice_weight: float | None = None,
        paper_weights: bool = False,
        **dice_kwargs: object,
    ) -> None:
        super().__init__()
        self.base = _base_loss(ce_weight, dice_weight, paper_weights, dice_kwargs)

    def forward(self, preds: Sequence[Tensor], target: Tensor) -> Tensor:
        _check_outputs(preds, "aggregated")
        n = len(preds)
        if n > MAX_OUTPUTS:
            raise ValueError(
                f"aggregated: {n} outputs give {2**n - 1} loss terms; at most {MAX_OUTPUTS} outputs"
            )
        total: Tensor | None = None
        for subset in nonempty_subsets(n):
            logits = preds[subset[0]]
            for i in subset[1:]:
                logits = logits + preds[i]  # Algorithm 1, lines 4-7
            term = self.base(logits, target)  # line 8
            total = term if total is None else total + term
        assert total is not None
        return total


@register_loss("weighted")
class WeightedLoss(nn.Module):
    """``sum_i w_i * base(logits_i, target)`` (Eq. 13); ``weights`` default to 1 for every output."""

    multi_output = True

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        ce_weight: float | None = None,
        dice_weight: float | None = None,
        paper_weights: bool = False,
        **dice_kwargs: object,
    ) -> None:
        super().__init__()
        self.weights = None if weights is None else [float(w) for w in weights]
        self.base = _base_loss(ce_weight, dice_weight, paper_weights, dice_kwargs)

    def forward(self, preds: Sequence[Tensor], target: Tensor) -> Tensor:
        _check_outputs(preds, "weighted")
        weights = self.weights if self.weights is not None else [1.0] * len(preds)
        if len(weights) != len(preds):
            raise ValueError(f"weighted: {len(weights)} weights for {len(preds)} outputs")
        total: Tensor | None = None
        for w, p in zip(weights, preds, strict=True):
            term = w * self.base(p, target)
            total = term if total is None else total + term
        assert total is not None
        return total
