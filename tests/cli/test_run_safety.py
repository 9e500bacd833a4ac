"""Run safety, training side (docs/reliability.md): owned run folders, divergence, exact resume, failed and
moved resumes, interruptions, pre-flight data checks, time guards. Each test can fail on the old main."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import load_config
from medseg.data.builtin import generate
from medseg.engine.train import fit

runner = CliRunner()
MEDSEG = [sys.executable, "-m", "medseg.cli"]
TINY = [
    "data.size=[48,48]",
    "data.batch_size=4",
    "model.name=unet",
    "model.kwargs={features: [4, 4, 8, 8, 8, 4]}",
    "loss.terms=[{loss: dice_ce, output: logits}]",
    "trainer.progress=false",
    "trainer.overlays=0",
    "trainer.max_epochs=2",
]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MEDSEG_RUN_DIR", None)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _one_line_error(output: str, needle: str) -> None:
    text = " ".join(output.split())
    assert "Traceback" not in output, output[-2000:]
    assert needle in text, output[-2000:]
    assert sum(1 for line in output.splitlines() if line.startswith("error:")) == 1, output[-2000:]


def _holds(run: Path, pid: int) -> bool:
    try:
        return (run / ".lock").read_text().strip() == str(pid)
    except OSError:
        return False


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def _max_dw(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate("phantom-ct", tmp_path_factory.mktemp("d") / "ct", seed=5, count=40, size=48, volumes=0)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished 2-epoch run (with validation, so best.ckpt exists)."""
    run = tmp_path_factory.mktemp("runs") / "done"
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), *_sets(TINY)])
    assert res.exit_code == 0, res.output
    return run


# ------------------------------------------------------------------------------ owned run folders
def test_train_refuses_an_existing_run_and_changes_nothing(finished, data):
    before = _snapshot(finished)
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(finished), *_sets(TINY)])
    assert res.exit_code == 2
    _one_line_error(res.output, "already holds a run")
    assert _snapshot(finished) == before


def test_train_with_bad_data_on_an_existing_run_changes_nothing(finished, tmp_path):
    before = _snapshot(finished)
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(finished), *_sets(TINY)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert _snapshot(finished) == before


def test_overwrite_moves_the_old_run_aside(finished, data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = _snapshot(run)
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), "--overwrite",
                              *_sets(TINY + ["trainer.max_epochs=1"])])
    assert res.exit_code == 0, res.output
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and _snapshot(moved[0]) == before  # nothing of the old run was lost
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


def test_train_refuses_a_folder_of_user_files(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), *_sets(TINY)])
    assert res.exit_code == 2
    _one_line_error(res.output, "not a medseg run")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_train_out_is_a_file(data, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(f), *_sets(TINY)])
    assert res.exit_code == 2
    _one_line_error(res.output, "is not a folder")
    assert f.read_text() == "x"


def test_train_out_in_a_read_only_place(data, tmp_path):
    target = Path("/sys/kernel/medseg-run") if os.geteuid() == 0 else tmp_path / "ro" / "run"
    if os.geteuid() != 0:
        target.parent.mkdir()
        target.parent.chmod(0o555)
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(target), *_sets(TINY)])
    assert res.exit_code == 2
    _one_line_error(res.output, "cannot create the run folder")
    assert not target.exists()


def test_two_concurrent_trainings_on_one_folder(data, tmp_path):
    """A second training on the folder refuses, a resume while the first runs is refused by the lock."""
    run = tmp_path / "run"
    cmd = MEDSEG + ["train", "--data", str(data), "--out", str(run), *_sets(TINY + ["trainer.max_epochs=500"])]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()[-2000:]
        second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        _one_line_error(second.stderr, "already holds a run")
        resume = subprocess.run(MEDSEG + ["train", "--resume", str(run)], env=_env(), capture_output=True, text=True,
                                timeout=120)
        assert resume.returncode == 2
        _one_line_error(resume.stderr, f"in use by another medseg process (pid {first.pid})")
        assert first.poll() is None  # the first run went on undisturbed
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    assert first.returncode == 130
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["resumed"] == 0
    assert len(json.loads((run / "summary.json").read_text())["history"]) == s["epochs"]


# ------------------------------------------------------------------------------------ divergence
def test_nan_loss_stops_the_run_and_no_bad_checkpoint_exists(data, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(run),
                              *_sets(TINY + ["optim.name=sgd", "optim.lr=1e12", "trainer.checkpoint_every_n_steps=1"])])
    assert res.exit_code == 1
    _one_line_error(res.output, "training diverged at epoch 1")
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "diverged" and "diverged" in s["note"]
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # whatever was written is finite
        sd = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    assert "done" not in res.output


def test_predict_evaluate_export_refuse_a_non_finite_checkpoint(finished, data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    for args in (["predict", str(run), "--input", str(data / "images"), "--output", str(tmp_path / "p")],
                 ["evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "e")],
                 ["export", "onnx", str(run), "--out", str(tmp_path / "m.onnx")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        _one_line_error(res.output, "non-finite")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("override, needle", [
    ("trainer.max_epochs=-5", "trainer.max_epochs"),
    ("data.batch_size=0", "data.batch_size"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=-1", "optim.lr"),
    ("trainer.max_epochs=0", "max_epochs must be >= 1"),
])
def test_impossible_settings_are_one_line(override, needle, data, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", override])
    assert res.exit_code == 2
    _one_line_error(res.output, needle)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------- exact resume
class _Crash(Callback):
    """Raises after ``step`` optimizer steps, or at the start of epoch ``epoch`` (after the epoch-end checkpoint)."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.step is not None and trainer.global_step == self.step:
            raise SystemError("simulated crash")

    def on_train_epoch_start(self, trainer, *args) -> None:
        if self.epoch is not None and trainer.current_epoch == self.epoch:
            raise SystemError("simulated crash")


EXACT = TINY + ["trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=3", "data.multiscale=[32,48]",
                "data.augment={preset: basic, flip: true, vflip: true, rotate_deg: 15}",
                "schedule={name: warmup_cosine, warmup_epochs: 1}"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("ref") / "run"
    fit(load_config("quickstart", EXACT + [f"data.root={data}", "data.builtin=null"]), out=run)
    return _weights(run)


@pytest.mark.parametrize("crash", [{"epoch": 1}, {"epoch": 2}, {"step": 4}, {"step": 13}],
                         ids=["epoch-end-1", "epoch-end-2", "mid-epoch-3", "mid-epoch-12"])  # last.ckpt every 3 steps
def test_resume_is_bit_identical(crash, reference, data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SystemError):
        fit(load_config("quickstart", EXACT + [f"data.root={data}", "data.builtin=null"]), out=run,
            callbacks=[_Crash(**crash)])
    # writes a kill -9 cut off (atomic_write's temp files) in the run folder, checkpoints/ and overlays/
    cut = [run / ".curves.png.x1.tmp", run / "checkpoints" / ".last.ckpt.x2.tmp"]
    for f in cut:
        f.write_bytes(b"partial")
    fit(None, resume=run)
    assert _max_dw(reference, _weights(run)) == 0.0
    assert not any(f.exists() for f in cut)


def test_kill_at_ten_random_moments_then_resume_is_bit_identical(data, tmp_path):
    """kill -9 ten times at random moments: last.ckpt is always loadable and the finished run equals the reference."""
    from medseg.engine.checkpoint import load_checkpoint

    long = EXACT + ["trainer.max_epochs=12"]
    # the reference runs in a process like the killed ones: results depend on the number of threads
    ref = subprocess.run(MEDSEG + ["train", "--data", str(data), "--out", str(tmp_path / "ref"), *_sets(long)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    reference = _weights(tmp_path / "ref")
    run = tmp_path / "run"
    rng = random.Random(1)
    train = MEDSEG + ["train", "--data", str(data), "--out", str(run), *_sets(long)]
    kills = 0
    while kills < 10:
        has_ckpt = (run / "checkpoints" / "last.ckpt").exists()
        cmd = MEDSEG + ["train", "--resume", str(run)] if has_ckpt else train + (["--overwrite"] if run.exists() else [])
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120  # the process holds the run (its pid in .lock): training is starting
        while time.time() < deadline and proc.poll() is None and not _holds(run, proc.pid):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment of set-up, training, validation or a checkpoint write
        if proc.poll() is not None:  # it finished the whole run before this kill
            assert proc.returncode == 0
            break
        proc.kill()
        proc.wait()
        kills += 1
        if (run / "checkpoints" / "last.ckpt").exists():
            load_checkpoint(run / "checkpoints" / "last.ckpt")  # always complete and loadable
    res = subprocess.run(MEDSEG + ["train", "--resume", str(run)], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 84 and kills >= 5
    assert _max_dw(reference, _weights(run)) == 0.0
    assert not list(run.rglob("*.tmp"))


def test_moved_run_resumes_with_its_best_checkpoint_and_score(finished, tmp_path):
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(finished, moved)
    best_before = json.loads((finished / "summary.json").read_text())["best_val"]
    best_bytes = (moved / "checkpoints" / "best.ckpt").read_bytes()
    res = runner.invoke(app, ["train", "--resume", str(moved), "--set", "trainer.max_epochs=3"])
    assert res.exit_code == 0, res.output
    s = json.loads((moved / "summary.json").read_text())
    assert s["best_val"] is not None and s["best_val"] >= best_before
    last = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)  # best.ckpt holds weights only
    cb = next(v for k, v in last["callbacks"].items() if "val/dice" in k)
    if (moved / "checkpoints" / "best.ckpt").read_bytes() != best_bytes:  # replaced only by a better epoch
        assert float(cb["best_model_score"]) > best_before
    assert s["epochs"] == 3 and s["resumed"] == 1 and s["resume_overrides"] == ["trainer.max_epochs=3"]


@pytest.mark.parametrize("damage", ["truncated", "foreign", "other-model", "nan"])
def test_failed_resume_changes_nothing(damage, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    last = run / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, last)
    else:
        ckpt = torch.load(last, weights_only=True)
        if damage == "other-model":
            ckpt["state_dict"] = {k: v[:1] if v.ndim else v for k, v in ckpt["state_dict"].items()}
        else:
            ckpt["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
        torch.save(ckpt, last)
    before = _snapshot(run)
    res = runner.invoke(app, ["train", "--resume", str(run), "--set", "trainer.max_epochs=3"])
    assert res.exit_code == 2
    _one_line_error(res.output, "last.ckpt")
    assert _snapshot(run) == before


@pytest.mark.parametrize("args, needle", [
    (["--set", "optim.lr=0.1"], "optim.lr cannot change in a resumed run"),
    (["--set", "data.size=[64,64]"], "data.size cannot change"),
    (["--data", "/somewhere"], "--data cannot be given with it"),
    (["--set", "trainer.max_epochs=1"], "below the 2 epochs already trained"),
])
def test_resume_refuses_unsafe_changes(args, needle, finished):
    before = _snapshot(finished)
    res = runner.invoke(app, ["train", "--resume", str(finished), *args])
    assert res.exit_code == 2
    _one_line_error(res.output, needle)
    assert _snapshot(finished) == before


# --------------------------------------------------------------------------------- interruptions
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_last_and_says_how_to_resume(sig, code, data, tmp_path):
    run = tmp_path / "run"
    cmd = MEDSEG + ["train", "--data", str(data), "--out", str(run),
                    *_sets(TINY + ["trainer.max_epochs=50", "trainer.checkpoint_every_n_steps=1000"])]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:  # training is under way
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    _one_line_error(err, f"medseg train --resume {run}")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["steps"] == ckpt["global_step"] > 0


# ------------------------------------------------------------------------- pre-flight data checks
def _bad_folder(tmp_path: Path, problem: str) -> tuple[Path, str]:
    """12 grey images with 3-class masks (values 0..2); ``c07`` broken as ``problem`` says."""
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / "masks" / f"c{i:02d}.png")
    bad = root / "masks" / "c07.png"
    if problem == "size":
        Image.fromarray(np.zeros((16, 32), np.uint8)).save(bad)
    elif problem == "label":
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(bad)
    elif problem == "corrupt":
        bad = root / "images" / "c07.png"
        bad.write_bytes(b"\x89PNG not really")
    return root, "c07.png"


FOLDER = ["data.size=[32,32]", "data.num_classes=3", "data.class_names=null", "data.val_fraction=0.3",
          "data.test_fraction=0.0", "data.normalize={kind: unit}"]


@pytest.mark.parametrize("problem", ["size", "label", "corrupt"])
def test_bad_file_found_before_the_run_folder_exists(problem, tmp_path, monkeypatch):
    root, name = _bad_folder(tmp_path, problem)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "--data", str(root), "--out", str(tmp_path / "run"), *_sets(TINY + FOLDER)])
    assert res.exit_code == 2
    _one_line_error(res.output, name)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_data_check_lists_every_bad_file(tmp_path):
    root, _ = _bad_folder(tmp_path, "corrupt")
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(root / "masks" / "c03.png")
    res = runner.invoke(app, ["data", "check", str(root), *_sets(FOLDER)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "c07.png" in text and "c03.png" in text and "2 of 12 cases failed" in text
    assert "Traceback" not in res.output
    good = tmp_path / "good"
    shutil.copytree(root, good)
    for i in (3, 7):
        shutil.copy(good / "images" / "c00.png", good / "images" / f"c0{i}.png")
        shutil.copy(good / "masks" / "c00.png", good / "masks" / f"c0{i}.png")
    res = runner.invoke(app, ["data", "check", str(good), *_sets(FOLDER)])
    assert res.exit_code == 0 and "all good" in res.output, res.output


def test_nan_image_is_found_by_the_check(tmp_path):
    import nibabel as nib

    root = tmp_path / "nn"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        img = np.random.default_rng(i).random((16, 16, 3)).astype(np.float32)
        if i == 2:
            img[3, 3, 1] = np.nan
        nib.save(nib.Nifti1Image(img, np.eye(4)), root / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image((img > 0.5).astype(np.uint8), np.eye(4)), root / "labelsTr" / f"case{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1}, "channel_names": {"0": "CT"},
                                                   "file_ending": ".nii.gz", "numTraining": 4}))
    res = runner.invoke(app, ["data", "check", str(root), "--recipe", "quickstart", "--set", "data.format=nnunet_raw",
                              "--set", "data.num_classes=2", "--set", "data.class_names=null",
                              "--set", "data.val_fraction=0.5", "--set", "data.normalize={kind: zscore}"])
    assert res.exit_code == 2, res.output
    assert "case2_0000.nii.gz" in res.output and "non-finite" in res.output


# ----------------------------------------------------------------------------------- time guards
def test_time_guard_stop_is_said_on_screen_and_in_the_summary(data, tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(run),
                              *_sets(TINY + ["trainer.max_epochs=500", "trainer.max_time_s=3"])])
    assert res.exit_code == 0, res.output
    assert "trainer.max_time_s=3 stopped the run" in " ".join(res.output.split())
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "stopped_early" and "max_time_s" in s["note"]


def test_quickstart_ends_by_epochs_not_by_a_time_guard():
    cfg = load_config("quickstart")
    assert cfg.trainer.max_time_s is None and cfg.trainer.max_epochs > 0
