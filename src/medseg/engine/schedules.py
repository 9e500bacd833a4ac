"""Learning-rate schedules, stepped once per optimizer step (per scheduler step under MGRAD's feedback).

Built from torch's schedulers wherever one gives the same sequence (tests/engine/test_schedules_optim.py
checks every recipe's schedule against the formula):

- ``poly``: (1 - it / max_it) ** power per iteration (TransUNet) -> ``PolynomialLR(total_iters=max_it)``.
- ``warmup_cosine``: linear warm-up (step + 1) / W over W = ``warmup_epochs`` epochs of steps, then cosine
  from the base lr to ``min_lr_ratio * optim.lr`` (one absolute floor for every param group, as torch's
  ``eta_min``) -> ``SequentialLR(LinearLR(1/W, 1, W - 1), CosineAnnealingLR(max_it - W), milestones=[W])``.
  (MONAI's ``WarmupCosineSchedule`` starts its warm-up at 0, step / W, so it is not the same sequence.)
- ``triangle``: MSNet's per-epoch triangle lr_e = base * (1 - |2 (e + 1) / (E + 1) - 1|), e = 0..E-1.
- ``constant`` -> ``ConstantLR(factor=1)``.

Horizon attributes (``total_iters``, ``T_max``, milestones) are rebuilt from the config on resume
(:data:`HORIZON_KEYS`), so a resumed run whose ``trainer.max_epochs`` grew decays to its new end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as L

#: state_dict entries of the schedulers built here that depend on the run's length, not its progress
HORIZON_KEYS = ("total_iters", "T_max", "eta_min", "start_factor", "_milestones")


def triangle_multiplier(steps_per_epoch: int, max_epochs: int) -> Callable[[int], float]:
    """MSNet's per-epoch triangle as ``f(step) -> multiplier`` for ``LambdaLR``."""
    steps_per_epoch, max_epochs = max(1, steps_per_epoch), max(1, max_epochs)

    def triangle(step: int) -> float:
        e = min(step // steps_per_epoch, max_epochs - 1)
        return 1.0 - abs(2.0 * (e + 1) / (max_epochs + 1) - 1.0)

    return triangle


def build_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    steps_per_epoch: int,
    total_steps: int,
    power: float = 0.9,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
    base_lr: float | None = None,
) -> L.LRScheduler:
    """The scheduler ``name`` on ``optimizer`` for a run of ``total_steps`` scheduler steps.

    ``base_lr``: the lr ``min_lr_ratio`` refers to (``optim.lr``; default: the first group's lr).
    """
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, total_steps)
    if name == "constant":
        return L.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "poly":
        return L.PolynomialLR(optimizer, total_iters=total, power=power)
    if name == "triangle":
        # kept as a LambdaLR: no torch/MONAI scheduler holds the lr constant within an epoch while stepped
        # per iteration (CyclicLR / OneCycleLR change it every step), and MSNet's schedule is per epoch.
        return L.LambdaLR(optimizer, triangle_multiplier(steps_per_epoch, -(-total // steps_per_epoch)))
    if name == "warmup_cosine":
        warm = int(round(warmup_epochs * steps_per_epoch))
        lr0 = base_lr if base_lr is not None else optimizer.param_groups[0]["lr"]
        cosine = L.CosineAnnealingLR(optimizer, T_max=max(1, total - warm), eta_min=min_lr_ratio * lr0)
        if warm == 0:
            return cosine
        linear = L.LinearLR(optimizer, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1)
        return L.SequentialLR(optimizer, [linear, cosine], milestones=[warm])
    raise ValueError(f"unknown schedule {name!r}; use poly, triangle, warmup_cosine or constant")


def drop_horizon(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler ``state_dict`` without its run-length entries (recursively for SequentialLR's parts),
    so that loading it keeps the horizon of the freshly built scheduler and restores only the progress."""
    out = {k: v for k, v in state.items() if k not in HORIZON_KEYS}
    if "_schedulers" in out:
        out["_schedulers"] = [drop_horizon(s) for s in out["_schedulers"]]
    return out
