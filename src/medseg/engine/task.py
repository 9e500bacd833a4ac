"""The LightningModule: model + criterion + training strategy + validation Dice."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from medseg.config import Config
from medseg.engine.optim import build_optimizer
from medseg.engine.schedules import lr_multiplier
from medseg.engine.strategies import build_strategy
from medseg.losses import Criterion
from medseg.models import build_model


def predict_labels(logits: Tensor) -> Tensor:
    """Class indices from logits: threshold 0.5 (sigmoid) for one channel, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


def batch_dice(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-sample mean foreground Dice [B] (both empty counts as 1) -- the validation signal."""
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, target == c
        inter = (p & g).flatten(1).sum(1).float()
        denom = (p.flatten(1).sum(1) + g.flatten(1).sum(1)).float()
        scores.append(torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom)))
    return torch.stack(scores, 1).mean(1)


class SegTask(pl.LightningModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.num_classes = d.num_classes
        self.model = build_model(cfg.model.name, in_channels=d.in_channels, out_channels=d.out_channels, **cfg.model.kwargs)
        self.criterion = Criterion.from_config(cfg.loss)
        self.strategy = build_strategy(cfg.strategy)
        self.automatic_optimization = self.strategy.automatic_optimization
        self._val_scores: list[Tensor] = []

    # -- training ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Any:
        return self.model(x)

    def log_losses(self, loss: Tensor, parts: dict[str, Tensor]) -> None:
        bs = self.cfg.data.batch_size
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=False)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self.strategy.training_step(self, batch)

    # -- validation -------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.model(batch["image"])
        loss, _ = self.criterion(out, batch["label"])
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["image"].shape[0], sync_dist=True)
        self._val_scores.append(batch_dice(predict_labels(out.logits), batch["label"], self.num_classes))

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores = torch.cat(self._val_scores)
        self._val_scores.clear()
        total = self.all_gather(scores.sum()).sum() if self.trainer.world_size > 1 else scores.sum()
        count = self.all_gather(torch.tensor(float(scores.numel()), device=scores.device)).sum() if self.trainer.world_size > 1 else float(scores.numel())
        self.log("val/dice", total / count, prog_bar=True, sync_dist=False, rank_zero_only=False)

    # -- optimisation -----------------------------------------------------------------------------
    def schedule_horizon(self) -> tuple[int, int]:
        """(scheduler steps per epoch, scheduler steps in the whole run) for the LR schedule.

        The scheduler steps once per optimizer step, except under MGRAD-UNet's per-pass feedback,
        which steps the optimizer ``feedback_iters`` times a batch but the scheduler once a batch;
        Lightning's ``max_steps`` counts optimizer steps, so it is divided by the passes there.
        """
        trainer = self.trainer
        trainer.estimated_stepping_batches  # noqa: B018 -- sets up the train loader, so num_training_batches is known
        batches = trainer.num_training_batches
        if batches == float("inf"):
            batches = 1
        manual = not self.automatic_optimization
        per_epoch = max(1, int(batches) if manual else math.ceil(batches / trainer.accumulate_grad_batches))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        total = per_epoch * epochs if epochs else None
        if trainer.max_steps is not None and trainer.max_steps > 0:
            passes = self.cfg.strategy.feedback_iters if manual else 1
            by_steps = math.ceil(trainer.max_steps / passes)
            total = by_steps if total is None else min(total, by_steps)
        return per_epoch, max(1, total if total is not None else per_epoch)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.model, self.cfg.optim)
        per_epoch, total = self.schedule_horizon()
        s = self.cfg.schedule
        fn = lr_multiplier(
            s.name,
            steps_per_epoch=per_epoch,
            max_epochs=math.ceil(total / per_epoch),
            total_steps=total,
            power=s.power,
            warmup_epochs=s.warmup_epochs,
            min_lr_ratio=s.min_lr_ratio,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from medseg.engine.checkpoint import medseg_metadata

        checkpoint["medseg"] = medseg_metadata(self.cfg)
