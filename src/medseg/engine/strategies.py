"""How one training batch is turned into updates.

- :class:`SinglePass`: one forward, one loss (Lightning's automatic optimization: AMP, gradient
  accumulation and clipping are Lightning's).
- :class:`FeedbackPasses`: MGRAD-UNet's feedback loop (paper Eq. 7, author's ``trainer.py``). Pass 1
  runs without feedback; pass t > 1 receives the *detached* ``extras["feedback"]`` of pass t - 1
  (λ(G_i - M_i), added to the encoder's RFB outputs by the model). ``update="per_pass"`` (author's
  code, default) does backward + optimizer step after every pass (``feedback_iters`` updates per
  batch, manual optimization); ``update="summed"`` sums the passes' losses and steps once.
  Either way a batch is one training *step* for Lightning (``global_step``, ``max_steps``, the progress
  bar, ``metrics.csv``, ``summary.json``, ``checkpoint_every_n_steps``): under ``per_pass`` only the last
  pass's update goes through the step counter, the earlier ones through the same strategy / precision
  path (AMP scaling, gradient checks) without counting.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medseg.config import ConfigError, StrategyConfig


class SinglePass:
    automatic_optimization = True

    def training_step(self, task: Any, batch: dict[str, Tensor]) -> Tensor:
        out = task.model(batch["image"])
        loss, parts = task.criterion(out, batch["label"])
        task.log_losses(loss, parts)
        return loss


class FeedbackPasses:
    def __init__(self, iters: int, update: str) -> None:
        if iters < 1:
            raise ConfigError("strategy.feedback_iters must be >= 1")
        self.iters = iters
        self.update = update
        self.automatic_optimization = update == "summed"

    @staticmethod
    def _feedback(out: Any) -> list[Tensor]:
        fb = out.extras.get("feedback")
        if fb is None:
            raise ConfigError("strategy 'feedback' needs a model that returns extras['feedback'] (e.g. mgrad_unet)")
        return [t.detach() for t in fb]

    def training_step(self, task: Any, batch: dict[str, Tensor]) -> Tensor | None:
        x, y = batch["image"], batch["label"]
        feedback = None
        if self.update == "summed":
            total = torch.zeros((), device=x.device)
            for _ in range(self.iters):
                out = task.model(x, feedback=feedback)
                loss, parts = task.criterion(out, y)
                total = total + loss
                feedback = self._feedback(out)
            task.log_losses(total / self.iters, parts)
            return total
        opt = task.optimizers()
        sched = task.lr_schedulers()
        for i in range(self.iters):
            out = task.model(x, feedback=feedback)
            loss, parts = task.criterion(out, y)
            opt.zero_grad(set_to_none=True)
            task.manual_backward(loss)
            clip = task.cfg.trainer.gradient_clip_val
            if clip:
                task.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm=task.cfg.trainer.gradient_clip_algorithm)
            if i == self.iters - 1:
                opt.step()  # counted: one step per batch
            else:  # the same update without advancing Lightning's step counter
                task.trainer.strategy.optimizer_step(opt.optimizer, lambda: None, task)
            feedback = self._feedback(out)
        if sched is not None:
            sched.step()
        task.log_losses(loss.detach(), parts)
        return None


def build_strategy(cfg: StrategyConfig) -> SinglePass | FeedbackPasses:
    if cfg.name == "single":
        return SinglePass()
    if cfg.name == "feedback":
        return FeedbackPasses(cfg.feedback_iters, cfg.update)
    raise ConfigError(f"unknown strategy {cfg.name!r}")
