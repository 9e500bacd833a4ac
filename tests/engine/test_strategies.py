"""Training strategies: single pass and MGRAD-UNet's feedback passes (per-pass steps or one summed step)."""

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from medseg.config import Config, ConfigError, StrategyConfig
from medseg.engine.strategies import FeedbackPasses
from medseg.engine.task import SegTask, case_dice, confusion_counts
from medseg.models import SegOutput


class FeedbackToy(nn.Module):
    """Adds the fed-back tensor to its hidden features and returns 1e-3 * hidden as the next feedback."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)
        self.seen: list[object] = []

    def forward(self, x, feedback=None):
        h = self.enc(x)
        self.seen.append(None if feedback is None else feedback[0])
        if feedback is not None:
            h = h + feedback[0]
        return SegOutput(self.head(h), extras={"feedback": [1e-3 * h]})


class Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        img = torch.rand(1, 8, 8, generator=g)
        return {"image": img, "label": (img[0] > 0.5).long()}


def _task(update: str, iters: int = 3, schedule: str = "constant") -> SegTask:
    cfg = Config.model_validate(
        {
            "data": {"num_classes": 2, "in_channels": 1, "batch_size": 2},
            "model": {"name": "unet", "kwargs": {"features": [4, 4, 4, 4, 4, 4]}},
            "loss": {"terms": [{"loss": "bce"}]},
            "optim": {"name": "sgd", "lr": 0.1},
            "strategy": {"name": "feedback", "feedback_iters": iters, "update": update},
            "schedule": {"name": schedule, "power": 1.0},
        }
    )
    task = SegTask(cfg)
    task.model = FeedbackToy()
    return task


def _fit(task: SegTask, max_epochs: int = 1, max_steps: int = -1) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, train_dataloaders=DataLoader(Batches(), batch_size=2))
    return trainer


def test_feedback_per_pass_steps_every_pass_and_detaches():
    from torch.optim.optimizer import register_optimizer_step_post_hook

    task = _task("per_pass", iters=3)
    updates = []
    handle = register_optimizer_step_post_hook(lambda *_: updates.append(1))
    try:
        trainer = _fit(task)
    finally:
        handle.remove()
    assert len(updates) == 2 * 3  # 2 batches x 3 optimizer updates
    assert trainer.global_step == 2  # ... counted as 2 training steps (steps = batches)
    seen = task.model.seen
    assert len(seen) == 6
    assert seen[0] is None and seen[3] is None  # the first pass of every batch has no feedback
    assert all(t is not None and not t.requires_grad for i, t in enumerate(seen) if i % 3)


def test_feedback_summed_steps_once_per_batch():
    task = _task("summed", iters=2)
    trainer = _fit(task)
    assert trainer.global_step == 2
    assert len(task.model.seen) == 4


def test_feedback_needs_a_model_with_feedback():
    class Plain(nn.Module):
        def forward(self, x, feedback=None):
            return SegOutput(x)

    with pytest.raises(ConfigError, match="extras"):
        FeedbackPasses(2, "summed")._feedback(Plain()(torch.zeros(1)))
    with pytest.raises(ConfigError):
        FeedbackPasses(0, "summed")
    with pytest.raises(ValueError):  # the config rejects it first
        StrategyConfig(name="feedback", feedback_iters=0)


def test_validation_dice_follows_the_evaluation_mode_hand_computed():
    pred = torch.tensor([[[1, 1], [0, 2]]])
    gt = torch.tensor([[[1, 0], [0, 0]]])
    counts = confusion_counts(pred, gt, 3)
    assert counts[0].tolist() == [[1, 2, 1, 4], [0, 1, 0, 4]]  # (intersection, predicted, true, pixels) per class
    # class 1: 2*1/(2+1) = 2/3; class 2: predicted, absent -> strict 0, paper (TransUNet) 1
    assert case_dice(counts, "strict") == pytest.approx((2 / 3 + 0) / 2)
    assert case_dice(counts, "paper") == pytest.approx((2 / 3 + 1) / 2)
    # a model that predicts nothing: paper mode gives 0 for both-empty too, strict gives 1
    empty = confusion_counts(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 2)
    assert case_dice(empty, "paper") == 0.0 and case_dice(empty, "strict") == 1.0
    # slices of one case are summed before the Dice (a volume is scored as a whole)
    two = confusion_counts(torch.tensor([[[1, 0]], [[0, 0]]]), torch.tensor([[[1, 0]], [[1, 0]]]), 2)
    assert case_dice(two.sum(0, keepdim=True), "strict") == pytest.approx(2 * 1 / (1 + 2))


@pytest.mark.parametrize("update, max_steps, batches_run", [("per_pass", 3, 3), ("summed", 3, 3), ("per_pass", -1, 10)])
def test_poly_schedule_ends_where_the_run_ends(update, max_steps, batches_run):
    """max_steps counts batches (also under per-pass feedback's 3 updates a batch); the poly lr must reach 0 at the run's end."""
    task = _task(update, iters=3, schedule="poly")
    trainer = _fit(task, max_epochs=5, max_steps=max_steps)  # 2 batches an epoch
    assert len(task.model.seen) == 3 * batches_run
    assert task.schedule_horizon() == (2, batches_run)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-12)
