"""The LightningModule: model + criterion + training strategy + validation Dice."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from medseg.config import Config, resolve_mode
from medseg.engine.optim import build_optimizer
from medseg.engine.safety import check_finite_grads, check_finite_loss
from medseg.engine.schedules import build_scheduler, drop_horizon
from medseg.engine.strategies import build_strategy
from medseg.losses import Criterion
from medseg.models import build_model

log = logging.getLogger(__name__)


def predict_labels(logits: Tensor, targets: str = "classes") -> Tensor:
    """Class indices from logits: threshold 0.5 (sigmoid) for one channel, argmax otherwise; nested regions
    (``data.targets: regions``) as :func:`medseg.engine.decode.logits_to_labels`."""
    from medseg.engine.decode import logits_to_labels

    return logits_to_labels(logits, targets)


def confusion_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per sample and foreground class: (intersection, predicted, true, all) pixel counts, ``[B, K-1, 4]``."""
    rows = []
    pixels = torch.full((pred.shape[0],), pred[0].numel(), device=pred.device)
    for c in range(1, num_classes):
        p, g = (pred == c).flatten(1), (target == c).flatten(1)
        rows.append(torch.stack([(p & g).sum(1), p.sum(1), g.sum(1), pixels], 1))
    return torch.stack(rows, 1).to(torch.int64)


def case_dice(counts: Tensor, mode: str) -> float:
    """Mean over cases of the mean foreground Dice, with evaluation's empty-mask rule of ``mode``
    (= the mean over classes of :func:`class_dice`)."""
    return float(class_dice(counts, mode).mean())


def class_dice(counts: Tensor, mode: str) -> Tensor:
    """Per foreground class, the mean over cases of its Dice, with evaluation's empty-mask rule of ``mode``: ``[K-1]``.

    ``counts`` ``[cases, K-1, 4]`` (see :func:`confusion_counts`) sums a case's slices, so a volume is scored as a whole, as evaluation
    does. ``paper`` (TransUNet): an empty prediction scores 0, a prediction of an absent class 1;
    ``strict``: both empty 1, one empty 0 (see :mod:`medseg.metrics.aggregate`).
    """
    inter, pred, true = counts[..., :3].double().unbind(-1)
    dice = 2 * inter / (pred + true).clamp_min(1)
    if mode == "paper":
        dice = torch.where(pred == 0, torch.zeros_like(dice), torch.where(true == 0, torch.ones_like(dice), dice))
    else:
        dice = torch.where((pred == 0) & (true == 0), torch.ones_like(dice), dice)
    return dice.mean(0)


class SegTask(pl.LightningModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.num_classes = d.num_classes
        self.model = build_model(cfg.model.name, in_channels=d.in_channels, out_channels=d.out_channels, **cfg.model.kwargs)
        if cfg.trainer.channels_last:
            from medseg.engine.fast import to_channels_last

            to_channels_last(self.model)
        self.criterion = Criterion.from_config(cfg.loss, targets=d.targets)
        self.strategy = build_strategy(cfg.strategy)
        self.automatic_optimization = self.strategy.automatic_optimization
        self._val_counts: dict[str, Tensor] = {}
        self._val_volumes = False  # validation cases are volumes (slices regrouped by case)
        self._collapse_warned = False
        from medseg.engine.visualize import default_class_names

        self.class_names = default_class_names(d.num_classes, d.class_names)

    # -- training ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Any:
        return self.model(x)

    def log_losses(self, loss: Tensor, parts: dict[str, Tensor]) -> None:
        check_finite_loss(loss, self.current_epoch, self.global_step)
        bs = self.cfg.data.batch_size
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=False)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self.strategy.training_step(self, batch)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.trainer.precision != "16-mixed":  # fp16's grad scaler skips inf steps by design
            check_finite_grads(self.model, self.current_epoch, self.global_step)

    # -- validation -------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.model(batch["image"])
        loss, _ = self.criterion(out, batch["label"])
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["image"].shape[0], sync_dist=True)
        counts = confusion_counts(predict_labels(out.logits, self.cfg.data.targets), batch["label"], self.num_classes).cpu()
        self._val_volumes |= any(s is not None for s in batch.get("slice") or [])
        for case, c in zip(batch["case"], counts):
            prev = self._val_counts.get(case)
            self._val_counts[case] = c if prev is None else prev + c

    @property
    def val_mode(self) -> str:
        """The empty-mask rule of validation: the recipe's evaluation rule (:func:`~medseg.config.resolve_mode`)."""
        return resolve_mode(self.cfg.eval.mode, self.cfg.eval.protocol, volume=self._val_volumes)

    def on_validation_epoch_end(self) -> None:
        counts, self._val_counts = self._val_counts, {}
        if self.trainer.world_size > 1:  # a volume's slices may be spread over ranks: merge by case
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, counts)
            counts = {}
            for part in gathered:
                for case, c in part.items():
                    counts[case] = c if case not in counts else counts[case] + c
        if not counts:
            return
        table = torch.stack(list(counts.values()))  # [cases, classes, 4]
        per_class = class_dice(table, self.val_mode)
        self.log("val/dice", per_class.mean().float(), prog_bar=True, sync_dist=False)
        for name, v in zip(self.class_names[1:], per_class):  # curves.png draws one line per class
            self.log(f"val/dice/{name}", v.float(), sync_dist=False)
        self._warn_foreground_collapse(table)

    def _warn_foreground_collapse(self, counts: Tensor) -> None:
        """One warning when predictions cover >90 % or <0.1 % of the validation pixels that truth does not."""
        if self._collapse_warned or self.trainer.sanity_checking or self.num_classes != 2:
            return
        pixels = max(1, int(counts[:, 0, 3].sum()))
        pred, true = int(counts[:, 0, 1].sum()) / pixels, int(counts[:, 0, 2].sum()) / pixels
        if (pred > 0.9 and true < 0.5) or (pred < 0.001 and true > 0.01):
            self._collapse_warned = True
            log.warning(
                "validation after epoch %d: the model marks %.1f %% of pixels as foreground where the truth has "
                "%.1f %%; likely causes: learning rate too high or too low for an untrained backbone "
                "(optim.param_groups lr_mult), a loss weighting that favours one class, too few steps so far",
                self.current_epoch + 1, 100 * pred, 100 * true)

    # -- optimisation -----------------------------------------------------------------------------
    def schedule_horizon(self) -> tuple[int, int]:
        """(scheduler steps per epoch, scheduler steps in the whole run) for the LR schedule.

        The scheduler steps once per optimizer step, except under MGRAD-UNet's per-pass feedback,
        which steps the optimizer ``feedback_iters`` times a batch but the scheduler once a batch;
        Lightning's ``max_steps`` counts batches there too (:mod:`medseg.engine.strategies`).
        """
        trainer = self.trainer
        # The loader's length, without creating the loader Lightning iterates: that one must be made after a
        # resumed run's loop state is restored (its sampler starts at the checkpoint's epoch and batch).
        if isinstance(trainer.datamodule, pl.LightningDataModule):
            batches = len(trainer.datamodule.train_dataloader())
            limit = trainer.limit_train_batches
            batches = min(batches, int(limit)) if isinstance(limit, int) else max(1, int(batches * float(limit)))
        else:  # a loader given to trainer.fit directly (tests): Lightning sets it up to count
            trainer.estimated_stepping_batches  # noqa: B018
            batches = trainer.num_training_batches
            if batches == float("inf"):
                batches = 1
        manual = not self.automatic_optimization
        per_epoch = max(1, int(batches) if manual else math.ceil(batches / trainer.accumulate_grad_batches))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        total = per_epoch * epochs if epochs else None
        if trainer.max_steps is not None and trainer.max_steps > 0:
            total = trainer.max_steps if total is None else min(total, trainer.max_steps)
        return per_epoch, max(1, total if total is not None else per_epoch)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.model, self.cfg.optim)
        per_epoch, total = self.schedule_horizon()
        s = self.cfg.schedule
        sched = build_scheduler(
            s.name,
            opt,
            steps_per_epoch=per_epoch,
            total_steps=total,
            power=s.power,
            warmup_epochs=s.warmup_epochs,
            min_lr_ratio=s.min_lr_ratio,
            base_lr=self.cfg.optim.lr,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from medseg.engine.checkpoint import medseg_metadata

        checkpoint["medseg"] = medseg_metadata(self.cfg)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before Lightning restores the schedulers: keep the horizon this (possibly longer) run was
        # configured with and restore only the progress (step count, current lr).
        if "lr_schedulers" in checkpoint:
            checkpoint["lr_schedulers"] = [drop_horizon(s) for s in checkpoint["lr_schedulers"]]
