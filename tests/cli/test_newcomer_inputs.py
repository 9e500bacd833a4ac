"""A run carries its inputs' preprocessing (issue 16 stumble 1) and lean checkpoints (stumble 10)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli import app
from tiny_runs import TINY_UNET, make_ct, train_tiny

runner = CliRunner()

TINY = [*TINY_UNET, "trainer.max_epochs=8"]  # learns the liver well enough to tell the right window from raw HU



@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    return make_ct(tmp_path_factory, count=64)


@pytest.fixture(scope="module")
def run_dir(ct_data, tmp_path_factory) -> Path:
    """Trained on the built-in PNG slices (HU windowed to [-160, 240], / 255)."""
    return train_tiny(ct_data, tmp_path_factory, TINY)


def _test_volume(ct_data: Path) -> tuple[Path, np.ndarray]:
    vid = (ct_data / "volumes" / "splits" / "test.txt").read_text().split()[0]
    truth = np.asarray(nib.load(ct_data / "volumes" / "labelsTs" / f"{vid}.nii.gz").dataobj)
    return ct_data / "volumes" / "imagesTs" / f"{vid}_0000.nii.gz", truth


def test_run_records_the_pngs_window_for_nifti_inputs_and_the_training_range(run_dir):
    data = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "config.yaml").read_text())))["data"]
    assert data["inputs"]["normalize"] == {"nifti": {"kind": "window", "window": [-160.0, 240.0], "mean": None, "std": None}}
    lo, hi = data["inputs"]["range"]
    assert 0.0 <= lo < hi <= 1.0


def test_predict_a_hu_volume_of_the_data_set_applies_the_training_window(run_dir, ct_data, tmp_path, caplog):
    """Before: raw HU went in as if in [0, 1]: this run labelled ~11x the true liver volume liver
    (the quickstart run ~18x); with the recorded window 0.9x."""
    volume, truth = _test_volume(ct_data)
    with caplog.at_level(logging.WARNING):
        res = runner.invoke(app, ["predict", str(run_dir), "--input", str(volume), "--output", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    pred = np.asarray(nib.load(next((tmp_path / "p").glob("*.nii.gz"))).dataobj)
    liver, true_liver = int((pred == 1).sum()), int((truth == 1).sum())
    assert true_liver / 2 < liver < true_liver * 2, (liver, true_liver)
    assert "far from the training" not in caplog.text


def test_predict_set_normalize_overrides_and_far_inputs_warn_once(run_dir, ct_data, tmp_path, caplog):
    volume, _ = _test_volume(ct_data)
    with caplog.at_level(logging.WARNING):
        res = runner.invoke(app, ["predict", str(run_dir), "--input", str(volume), "--output", str(tmp_path / "p"),
                                  "--set", "data.normalize={kind: unit}"])  # raw HU as if in [0, 1]
    assert res.exit_code == 0, res.output
    lines = [r.getMessage() for r in caplog.records if "far from the training" in r.getMessage()]
    assert len(lines) == 1 and volume.name in lines[0] and "\n" not in lines[0]
    res = runner.invoke(app, ["predict", str(run_dir), "--input", str(volume), "--output", str(tmp_path / "q"),
                              "--set", "model.name=snet"])
    assert res.exit_code == 2 and "predict changes only data.* and eval.* keys" in res.output


def test_evaluate_on_the_hu_volumes_needs_no_window_override(run_dir, ct_data, tmp_path):
    vols = ct_data / "volumes"
    dice = {}
    for name, extra in (("recorded", []), ("explicit", ["--set", "data.normalize={kind: window, window: [-160, 240]}"])):
        out = tmp_path / name
        res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(vols), "--split", "test", "--out", str(out),
                                  "--set", "data.format=nnunet_raw", "--set", "eval.protocol=volume", *extra])
        assert res.exit_code == 0, res.output
        dice[name] = json.loads((out / "summary.json").read_text())["classes"]["1"]["dice"]["mean"]
    assert dice["recorded"] == pytest.approx(dice["explicit"], abs=1e-6)


def test_best_checkpoint_holds_weights_only_and_the_summary_states_sizes(run_dir):
    """Before: best.ckpt carried the optimizer state too (a 20-image U-Net run wrote 747 MB)."""
    ck = run_dir / "checkpoints"
    best = torch.load(ck / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(ck / "last.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best and "medseg" in best and best["state_dict"]
    assert last["optimizer_states"]  # --resume continues from last.ckpt only
    sizes = json.loads((run_dir / "summary.json").read_text())["checkpoint_bytes"]
    assert sizes == {"best": (ck / "best.ckpt").stat().st_size, "last": (ck / "last.ckpt").stat().st_size}
    assert sizes["best"] < sizes["last"]
