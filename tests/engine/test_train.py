"""engine/train.py: checkpoint selection by trainer.val_metric and the checks that run before training."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from medseg.config import ConfigError, load_config
from medseg.engine.train import build_trainer, check_loss_outputs, check_training_sizes
from medseg.models import build_model


@pytest.mark.parametrize("metric,mode", [("dice", "max"), ("loss", "min")])
def test_best_checkpoint_mode_follows_val_metric(metric, mode, tmp_path):
    cfg = load_config("quickstart", [f"trainer.val_metric={metric}", "trainer.progress=false"])
    trainer = build_trainer(cfg, tmp_path / "run", has_val=True)
    best = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
    assert [(c.monitor, c.mode) for c in best] == [(f"val/{metric}", mode)]
    assert not (tmp_path / "run").exists()  # building the trainer writes nothing


def test_unknown_val_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="trainer.val_metric"):
        load_config("quickstart", ["trainer.val_metric=iou"])


def test_training_sizes_must_fit_the_stride():
    check_training_sizes(load_config("quickstart", ["data.size=[96,160]", "data.multiscale=[64,96]"]), 16)
    with pytest.raises(ConfigError, match="data.size: 96x100 .* stride 16; nearest valid size is 96x96"):
        check_training_sizes(load_config("quickstart", ["data.size=[96,100]"]), 16)
    with pytest.raises(ConfigError, match="data.multiscale: 90x90 .* nearest valid size is 96x96"):
        check_training_sizes(load_config("quickstart", ["data.multiscale=[64,90]"]), 16)


def test_loss_outputs_must_exist_and_the_check_keeps_the_model_in_train_mode():
    cfg = load_config("quickstart", ["model.name=unet", "data.size=[32,32]", "loss.terms=[{loss: ce, output: aux/deep}]"])
    model = build_model("unet", 1, 7, features=[4, 4, 8, 8, 8, 4]).train()
    with pytest.raises(ConfigError, match=r"loss.terms\[0\] \(ce\): model unet has no output 'aux/deep'; available: logits"):
        check_loss_outputs(cfg, model)
    assert model.training


def test_remove_stale_temp_files_keeps_the_checkpoints(tmp_path):
    from medseg.utils import atomic_write_text, remove_stale_temp_files

    atomic_write_text(tmp_path / "last.ckpt", "complete")
    (tmp_path / ".last.ckpt.k3j2h1.tmp").write_text("half-written")  # what a SIGKILL mid-write leaves
    (tmp_path / "notes.tmp").write_text("not ours")
    assert remove_stale_temp_files(tmp_path) == [tmp_path / ".last.ckpt.k3j2h1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "notes.tmp"]
    assert (tmp_path / "last.ckpt").read_text() == "complete"


def test_epochs_done_counts_an_epoch_whose_end_was_recorded():
    """A SIGINT after History recorded epoch 50 but before Lightning advanced its counter (49) says 50."""
    from types import SimpleNamespace

    from medseg.engine.train import History, _epochs_done

    history = History(Path("unused"))
    history.rows = [{"epoch": float(i + 1), "step": float(7 * (i + 1))} for i in range(50)]
    assert _epochs_done(SimpleNamespace(current_epoch=49), history) == 50
    assert _epochs_done(SimpleNamespace(current_epoch=50), history) == 50
    assert _epochs_done(SimpleNamespace(current_epoch=3), None) == 3
    history.rows = []
    assert _epochs_done(SimpleNamespace(current_epoch=0), history) == 0


@pytest.mark.parametrize("remaining,steps,max_epochs,max_steps,stopped", [
    (0.0, 849, 16, -1, True),    # Lightning counted the cut epoch as the 16th: 849 of 16 x 56 = 896 steps
    (0.0, 896, 16, -1, False),   # the plan's last step, just as the time ran out
    (12.0, 896, 16, -1, False),  # finished with time to spare
    (0.0, 849, -1, -1, False),   # max_epochs=-1: the time is the plan
    (0.0, 300, -1, 400, True),   # a step plan cut by the time
])
def test_time_guard_stop_uses_the_timer_and_the_planned_steps(remaining, steps, max_epochs, max_steps, stopped):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from medseg.engine.train import time_guard_stop

    timer = Timer(duration={"seconds": 600})
    timer.time_remaining = lambda stage="train": remaining
    trainer = SimpleNamespace(callbacks=[timer], global_step=steps, current_epoch=16, num_training_batches=56)
    cfg = load_config("quickstart", ["trainer.max_time_s=600", f"trainer.max_epochs={max_epochs}",
                                     f"trainer.max_steps={max_steps}"])
    note = time_guard_stop(cfg, trainer)
    assert (note is not None) == stopped
    if stopped and max_epochs > 0:
        assert "after 849 of 896 steps" in note
