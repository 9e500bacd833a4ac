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
