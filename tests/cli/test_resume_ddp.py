"""Interrupted training resumes from checkpoints/last.ckpt; a 2-process CPU (gloo) DDP epoch runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medseg.data.builtin import generate

MEDSEG = [sys.executable, "-m", "medseg.cli"]
TINY = [
    "--set", "data.size=[48,48]",
    "--set", "data.batch_size=4",
    "--set", "model.name=unet",  # stride 16 allows 48 px, the fastest kill/resume
    "--set", "model.kwargs={features: [4, 4, 8, 8, 8, 4]}",
    "--set", "loss.terms=[{loss: dice_ce, output: logits}]",
    "--set", "trainer.max_time_s=null",
    "--set", "trainer.progress=false",
    "--set", "trainer.overlays=0",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MEDSEG_RUN_DIR", None)
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate("phantom-ct", tmp_path_factory.mktemp("d") / "ct", seed=5, count=40, size=48, volumes=0)


def test_kill_mid_epoch_then_resume(data, tmp_path):
    run = tmp_path / "run"
    cmd = MEDSEG + ["train", "--data", str(data), "--out", str(run), *TINY,
                    "--set", "trainer.max_epochs=3", "--set", "trainer.checkpoint_every_n_steps=2",
                    "--set", "trainer.log_every_n_steps=1"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "training ended before it could be interrupted: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _csv_rows(run / "metrics.csv")
    assert not (run / "summary.json").exists()  # it really was interrupted
    import torch

    step_at_kill = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    assert step_at_kill >= 2
    res = subprocess.run(MEDSEG + ["train", "--resume", str(run)], env=_env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["resumed"] == 1 and s["epochs"] == 3
    # it continued from the checkpoint (a restart from scratch starts at 0) and ran only the rest of the plan
    n_train = len((data / "splits" / "train.txt").read_text().split())
    planned = 3 * (n_train // 4)  # 3 epochs of full batches of 4 (drop_last)
    assert s["start_step"] == step_at_kill
    assert s["steps"] == planned
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == planned
    # nothing left half-written
    assert not [p for p in run.rglob("*.tmp")]
    # metrics.csv keeps the rows logged before the checkpoint and drops the lost part the resume trained again
    after = _csv_rows(run / "metrics.csv")
    kept = [r for r in before if int(r["step"]) < step_at_kill]
    assert kept and after[: len(kept)] == kept  # rows up to the checkpoint were on disk and survived
    loss_steps = [int(r["step"]) for r in after if r.get("train/loss_step")]
    assert loss_steps == list(range(planned))  # every step once: none lost, none twice
    assert max(int(float(r["epoch"])) for r in after if r.get("val/dice")) == 2


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    res = subprocess.run(MEDSEG + ["train", "--resume", str(tmp_path)], env=_env(), capture_output=True, text=True)
    assert res.returncode == 2 and "nothing to resume" in res.stderr


def test_ddp_two_cpu_processes_one_epoch(data, tmp_path):
    run = tmp_path / "ddp"
    cmd = MEDSEG + ["train", "--data", str(data), "--out", str(run), *TINY, "--set", "trainer.max_epochs=1",
                    "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["epochs"] == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    # each process saw half of the training slices: steps = ceil(28 / 2 / 4) per epoch, not 28 / 4
    n_train = len((data / "splits" / "train.txt").read_text().split())
    assert s["steps"] == -(-n_train // 2 // 4) or s["steps"] == n_train // 2 // 4
    shutil.rmtree(run, ignore_errors=True)
