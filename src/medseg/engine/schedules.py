"""Learning-rate schedules as multipliers of the base lr, evaluated once per optimizer step.

- ``poly``: (1 - it / max_it) ** power per iteration (TransUNet).
- ``triangle``: MSNet's per-epoch triangle lr_e = base * (1 - |2 (e + 1) / (E + 1) - 1|), e = 0..E-1,
  which rises linearly to ``base`` at mid-training and falls linearly again ("warm-up + linear decay").
- ``warmup_cosine``: linear warm-up over ``warmup_epochs`` then cosine to ``min_lr_ratio``.
- ``constant``.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_multiplier(
    name: str,
    *,
    steps_per_epoch: int,
    max_epochs: int,
    power: float = 0.9,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
    total_steps: int | None = None,
) -> Callable[[int], float]:
    """Return ``f(step) -> multiplier`` for ``torch.optim.lr_scheduler.LambdaLR`` (stepped every iteration).

    ``total_steps``: the run's length in scheduler steps when it ends before ``max_epochs`` full
    epochs (``trainer.max_steps``); the per-iteration schedules reach their end there.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    max_steps = max(1, total_steps if total_steps is not None else steps_per_epoch * max_epochs)
    if name == "constant":
        return lambda step: 1.0
    if name == "poly":
        return lambda step: max(0.0, 1.0 - min(step, max_steps) / max_steps) ** power
    if name == "triangle":
        def triangle(step: int) -> float:
            e = min(step // steps_per_epoch, max_epochs - 1)
            return 1.0 - abs(2.0 * (e + 1) / (max_epochs + 1) - 1.0)

        return triangle
    if name == "warmup_cosine":
        warm = int(round(warmup_epochs * steps_per_epoch))

        def warmup_cosine(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, max_steps - warm))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        return warmup_cosine
    raise ValueError(f"unknown schedule {name!r}; use poly, triangle, warmup_cosine or constant")
