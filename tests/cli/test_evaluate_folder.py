"""`medseg evaluate --pred DIR --truth DIR`: folder evaluation equals run evaluation on the same predictions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import ct_data, run_dir  # noqa: F401  (the tiny-run fixtures of the CLI tests)
from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()






def _dice(path: Path) -> dict[tuple[str, str], float]:
    with open(path, newline="") as f:
        return {(r["case"], r["class"]): float(r["dice"]) for r in csv.DictReader(f)}


def test_folder_evaluation_equals_run_evaluation(run_dir, ct_data, tmp_path):  # noqa: F811
    ids = (ct_data / "splits/test.txt").read_text().split()
    images, truth = tmp_path / "images", tmp_path / "truth"
    images.mkdir()
    truth.mkdir()
    for cid in ids:
        shutil.copy(ct_data / "images" / f"{cid}.png", images)
        shutil.copy(ct_data / "masks" / f"{cid}.png", truth)
    pred = tmp_path / "pred"
    res = runner.invoke(app, ["predict", str(run_dir), "--input", str(images), "--output", str(pred)])
    assert res.exit_code == 0, res.output
    run_out = tmp_path / "run-eval"
    res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(ct_data), "--split", "test", "--mode", "strict",
                              "--out", str(run_out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--num-classes", "7",
                              "--mode", "strict"])
    assert res.exit_code == 0, res.output
    folder_out = tmp_path / "pred-eval" / "image-strict"  # the documented default, beside the predictions
    run_dice, folder_dice = _dice(run_out / "cases.csv"), _dice(folder_out / "cases.csv")
    assert len(run_dice) == len(ids) * 6 and set(folder_dice) == set(run_dice)
    for key, v in run_dice.items():
        assert folder_dice[key] == pytest.approx(v, abs=1e-12, nan_ok=True), key
    s = json.loads((folder_out / "summary.json").read_text())
    r = json.loads((run_out / "summary.json").read_text())
    assert s["cases"] == r["cases"] == len(ids) and s["num_classes"] == 7 and s["mode"] == "strict"
    assert s["average"]["dice"]["mean"] == pytest.approx(r["average"]["dice"]["mean"])
    assert (folder_out / "table.md").is_file()


def test_folder_evaluation_infers_binary_classes_and_lists_missing_predictions(tmp_path):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    a = np.zeros((20, 24), np.uint8)
    a[5:12, 6:14] = 255
    for name in ("a", "b"):
        Image.fromarray(a).save(truth / f"{name}.png")
    p = a.copy()
    p[5:12, 6:10] = 0  # half the square: Dice 2*28/(56+28) = 2/3
    Image.fromarray(p).save(pred / "a.png")
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)])
    assert res.exit_code == 1, res.output  # b has no prediction: listed, exit 1
    assert "case b: no prediction" in res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["num_classes"] == 2 and s["cases"] == 1
    assert s["classes"]["1"]["dice"]["mean"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("args", [["--pred", "x"], ["run", "--pred", "x", "--truth", "y"]])
def test_folder_evaluation_argument_errors(args):
    res = runner.invoke(app, ["evaluate", *args])
    assert res.exit_code == 2 and "error" in res.output


def test_nifti_folders_are_scored_volume_wise_by_case_name(tmp_path):
    """nnU-Net naming: prediction case_0000.nii.gz matches reference case.nii.gz; volumes -> volume protocol."""
    import nibabel as nib

    truth, pred = tmp_path / "labelsTr", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    lab = np.zeros((16, 12, 6), np.uint8)
    lab[2:10, 3:9, 1:5] = 1
    lab[11:14, 2:5, 2:4] = 2
    p = lab.copy()
    p[lab == 2] = 0  # class 2 missed entirely, class 1 exact
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(lab, affine), truth / "case_001.nii.gz")
    nib.save(nib.Nifti1Image(p, affine), pred / "case_001_0000.nii.gz")
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert (s["protocol"], s["mode"], s["num_classes"], s["cases"]) == ("volume", "paper", 3, 1)
    assert s["classes"]["1"]["dice"]["mean"] == 1.0 and s["classes"]["2"]["dice"]["mean"] == 0.0
