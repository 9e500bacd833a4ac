"""Progress bars (evaluate, predict, export, data generation) and right epoch / step counts (issue #16 item 8)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from medseg.cli import app
from medseg.progress import progress_enabled, track
from tiny_runs import ONE_EPOCH, make_grey_classes


def test_bar_is_drawn_on_a_terminal_and_nothing_is_written_elsewhere(monkeypatch):
    buf = io.StringIO()
    tty = Console(file=buf, force_terminal=True, width=100)
    assert list(track(range(3), "predict", console=tty)) == [0, 1, 2]
    out = buf.getvalue()
    assert "predict" in out and "3/3" in out and "ETA" in out
    # not a terminal (a log file, a pipe): the items pass through and stderr stays empty
    monkeypatch.delenv("MEDSEG_PROGRESS", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert not progress_enabled()
    assert list(track(range(3), "predict")) == [0, 1, 2] and err.getvalue() == ""
    monkeypatch.setenv("MEDSEG_PROGRESS", "1")  # forced on
    assert progress_enabled()
    monkeypatch.setenv("MEDSEG_PROGRESS", "0")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert not progress_enabled()  # forced off on a terminal


@pytest.mark.parametrize("forced", ["1", "0"])
def test_data_builtin_shows_its_bar_only_on_a_terminal(tmp_path, monkeypatch, forced):
    monkeypatch.setenv("MEDSEG_PROGRESS", forced)  # CliRunner's streams are not terminals: "1" stands for one
    res = CliRunner().invoke(app, ["data", "builtin", "phantom-endo", "--out", str(tmp_path / "endo"), "--count", "3"])
    assert res.exit_code == 0, res.output
    assert ("generate phantom-endo" in res.output and "3/3" in res.output and "ETA" in res.output) == (forced == "1")


def test_training_bar_counts_epochs_from_one():
    from medseg.engine.train import EpochBar

    bar = EpochBar()
    bar._trainer = SimpleNamespace(max_epochs=1)  # what Lightning attaches
    assert bar._get_train_description(0).strip() == "Epoch 1/1"  # Lightning's own bar reads "Epoch 0/0"
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(4).strip() == "Epoch 5"


def _train(tmp_path, name, sets):
    data = tmp_path / "grey" if (tmp_path / "grey").is_dir() else make_grey_classes(tmp_path / "grey")
    out = tmp_path / name
    args = ["train", "--recipe", "unet", "--data", str(data), "--out", str(out)]
    # trainer.progress on: CliRunner's stderr is no terminal, so one line per epoch instead of a bar
    for s in [*ONE_EPOCH, "trainer.progress=true", "data.batch_size=4", "trainer.log_every_n_steps=1", *sets]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    return res.output, json.loads((out / "summary.json").read_text()), rows


def test_one_epoch_mgrad_run_counts_epochs_from_one_and_steps_as_batches(tmp_path, caplog):
    """A 1-epoch MGRAD-UNet run: 3 feedback passes and 3 optimizer updates a batch, still one step a batch.

    12 images: 9 for training (seeded split), batches of 4 with drop_last -> 2 batches = 2 steps (before: 6)."""
    caplog.set_level(logging.INFO, logger="medseg")
    mgrad = ["model.name=mgrad_unet", "model.kwargs={encoder_channels: [4, 8, 8, 16, 16], width: 4}",
             "strategy.name=feedback", "strategy.feedback_iters=3", "strategy.update=per_pass"]
    output, s, rows = _train(tmp_path, "mgrad", mgrad)
    assert "epoch 1/1, 2 steps" in output
    assert (s["epochs"], s["max_epochs"], s["steps"]) == (1, 1, 2)
    assert [(r["epoch"], r["step"]) for r in s["history"]] == [(1, 2)]  # epoch 1 ended after step 2
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("epoch 1/1: 2 steps, train loss ")
    assert "val dice" in epoch_lines[0] and "━" not in output  # no bar drawn off a terminal
    # metrics.csv keeps Lightning's 0-based indexes: one epoch (0), steps 0 and 1, one loss row per step
    assert {r["epoch"] for r in rows} == {"0"} and max(int(r["step"]) for r in rows) == 1
    assert [r["step"] for r in rows if r.get("train/loss_step")] == ["0", "1"]
