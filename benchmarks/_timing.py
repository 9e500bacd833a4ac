"""A Lightning callback that times every training step (for the training-step benchmarks)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch


class StepTimer(pl.Callback):
    """Wall seconds of each ``training_step`` incl. backward and optimizer step (CUDA synchronised),
    and the logged step loss; the data loader's time between steps is not counted."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self._t0 = 0.0

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._t0)
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        if loss is not None:
            self.losses.append(float(loss))
