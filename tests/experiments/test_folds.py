"""Cross-validation (`medseg train --folds K --fold i|all`) end to end on a tiny model, and ensembles of runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import load_config
from medseg.data.base import read_list_file
from medseg.data.splits import read_splits
from medseg.metrics import MetricTable
from tiny_runs import TINY_UNET

runner = CliRunner()
#: TINY_UNET for one epoch on the binary 32x32 squares of `_squares`.
ONE_EPOCH = [s for s in TINY_UNET if not s.startswith(("trainer.max_epochs", "data.size"))] + [
    "trainer.max_epochs=1", "data.size=[32,32]", "data.num_classes=2", "data.class_names=null", "eval.fast=false"]
TRAIN = [f"s{i}" for i in range(6)]
TEST = ["t0", "t1"]


def _squares(root: Path) -> Path:
    """8 grey 32x32 images with a bright square (the mask); splits/train.txt (6) and test.txt (2)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    for cid in TRAIN + TEST:
        y, x = rng.integers(2, 18, size=2)
        mask = np.zeros((32, 32), np.uint8)
        mask[y : y + 12, x : x + 12] = 255
        image = (rng.integers(0, 60, (32, 32)) + (mask > 0) * 150).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{cid}.png")
        Image.fromarray(mask).save(root / "masks" / f"{cid}.png")
    (root / "splits" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "splits" / "test.txt").write_text("\n".join(TEST) + "\n")
    return root


def _train(args: list[str]):
    full = ["train"] + args
    for s in ONE_EPOCH:
        full += ["--set", s]
    return runner.invoke(app, full)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads made these tiny steps ~4x slower (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cv(tmp_path_factory, one_thread):
    """A 2-fold CV: `--fold 0` first, then `--fold all` (which must skip fold 0)."""
    data = _squares(tmp_path_factory.mktemp("data") / "squares")
    cv_dir = tmp_path_factory.mktemp("cv") / "cv"
    res = _train(["--data", str(data), "--out", str(cv_dir), "--folds", "2", "--fold", "0"])
    assert res.exit_code == 0, res.output
    assert not (cv_dir / "cv_summary.json").exists() and not (cv_dir / "fold_1").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (cv_dir / "fold_0" / "checkpoints").iterdir()}
    res = _train(["--data", str(data), "--out", str(cv_dir), "--folds", "2", "--fold", "all"])
    assert res.exit_code == 0, res.output
    return {"data": data, "dir": cv_dir, "fold0_checkpoints": first}


def test_resumed_fold_all_skips_the_finished_fold(cv):
    ck = cv["dir"] / "fold_0" / "checkpoints"
    assert {p.name: p.stat().st_mtime_ns for p in ck.iterdir()} == cv["fold0_checkpoints"]
    assert json.loads((cv["dir"] / "fold_1" / "summary.json").read_text())["status"] == "completed"


def test_splits_are_written_once_in_the_cv_folder(cv):
    d, data = cv["dir"], cv["data"]
    folds = read_splits(d / "splits_final.json")
    pool = read_list_file(data / "splits" / "train.txt")  # explicit val / test lists stay out
    assert sorted(folds[0]["val"] + folds[1]["val"]) == sorted(pool)
    assert not set(pool) & set(read_list_file(data / "splits" / "test.txt"))
    for i, f in enumerate(folds):
        assert sorted(f["train"]) == sorted(folds[1 - i]["val"])
        cfg = load_config(str(d / f"fold_{i}" / "config.yaml"))
        assert (Path(cfg.data.splits_file), cfg.data.fold) == (d / "splits_final.json", i)
    assert not list(data.glob("splits_final.json"))  # the data folder is never written


def test_cv_summary_per_fold_mean_sd_and_out_of_fold(cv):
    d = cv["dir"]
    s = json.loads((d / "cv_summary.json").read_text())
    folds = read_splits(d / "splits_final.json")
    dice = []
    tables = []
    for i, f in enumerate(s["per_fold"]):
        ev = d / f["evaluation"]
        assert ev == d / f"fold_{i}" / "eval" / "val-image-strict"
        own = json.loads((ev / "summary.json").read_text())
        assert f["metrics"]["dice"] == pytest.approx(own["average"]["dice"]["mean"], abs=1e-12)
        run = json.loads((d / f"fold_{i}" / "summary.json").read_text())
        assert f["metrics"]["validation best dice"] == pytest.approx(run["best_val"], abs=1e-12)
        dice.append(f["metrics"]["dice"])
        tables.append(MetricTable.from_csv(ev / "cases.csv", mode="strict"))
        assert sorted(tables[-1].cases) == sorted(folds[i]["val"])
    assert s["mean"]["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-12)
    assert s["mean"]["dice"]["sd"] == pytest.approx(np.std(dice, ddof=1), abs=1e-12)
    # out-of-fold: every case once, scored by the fold that did not train on it = the folds' rows together
    merged = MetricTable(mode="strict")
    for t in tables:
        merged.rows += t.rows
        merged._cases.update(t._cases)
    assert s["oof"]["cases"] == len(TRAIN)
    for m in ("dice", "iou", "precision"):
        assert s["oof"]["metrics"][m] == pytest.approx(merged.summary()["average"][m]["mean"], abs=1e-9)
    md = (d / "cv_summary.md").read_text()
    assert "| dice |" in md and "mean ± sd" in md and "out-of-fold" in md


def test_fold_status(tmp_path):
    from medseg.experiments.folds import fold_status

    run = tmp_path / "fold_0"
    assert fold_status(run) == "new"
    (run / "checkpoints").mkdir(parents=True)
    assert fold_status(run) == "restart"  # stopped before its first checkpoint: start again (moved aside)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert fold_status(run) == "resume"
    for status, want in (("interrupted", "resume"), ("diverged", "diverged"), ("completed", "done"),
                         ("stopped_early", "done")):
        (run / "summary.json").write_text(json.dumps({"status": status}))
        assert fold_status(run) == want


def test_acdc_folds_keep_patients_together(shared_data):
    from medseg.config import DataConfig
    from medseg.data.readers import build_reader
    from medseg.data.splits import case_groups, make_folds

    reader = build_reader(DataConfig(format="transunet", root=str(shared_data / "acdc"), num_classes=4))
    pool = reader.cv_pool()
    assert len(pool) == 1312 and pool == reader.ids("train")  # train_slices; val.list / test.list stay out
    groups, how = case_groups(pool, None, reader)
    assert len(set(groups.values())) == 70 and "70 groups" in how  # 140 volumes of 70 patients
    folds = make_folds(pool, 5, seed=0, groups=groups)
    patients = [{groups[c] for c in f["val"]} for f in folds]
    assert [len(p) for p in patients] == [14] * 5 and len(set().union(*patients)) == 70
    test_patients = {c.split("_")[0] for c in reader.ids("test")}
    assert not test_patients & set(groups.values())


def test_cv_folder_of_another_plan_is_refused(cv):
    d, data = cv["dir"], cv["data"]
    res = _train(["--data", str(data), "--out", str(d), "--folds", "3", "--fold", "0"])
    assert res.exit_code == 2 and "2-fold cross-validation, not 3 folds" in res.output
    res = _train(["--data", str(data), "--out", str(d), "--folds", "2", "--fold", "0", "--set", "optim.lr=0.5"])
    assert res.exit_code == 2 and "another configuration (optim.lr" in res.output
    res = runner.invoke(app, ["train", "--folds", "2", "--fold", "2"])
    assert res.exit_code == 2 and "--fold must be 0..1 or all" in res.output
    res = _train(["--data", str(data), "--out", str(d), "--folds", "2", "--fold", "all", "--devices", "2"])
    assert res.exit_code == 2 and "one fold per command" in res.output


def _png_probs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.float64) for p in sorted((folder / "probabilities").iterdir())}


def test_ensemble_of_two_runs_is_the_mean_of_their_probabilities(cv, tmp_path):
    d, data = cv["dir"], cv["data"]
    runs = [d / "fold_0", d / "fold_1"]
    images = data / "splits"  # any folder of images: use two test images
    inputs = tmp_path / "in"
    inputs.mkdir()
    for cid in read_list_file(images / "test.txt"):
        (inputs / f"{cid}.png").write_bytes((data / "images" / f"{cid}.png").read_bytes())
    outs = []
    for name, args in (("a", [runs[0]]), ("b", [runs[1]]), ("ens", runs)):
        res = runner.invoke(app, ["predict", *map(str, args), "--input", str(inputs), "--output", str(tmp_path / name),
                                  "--probabilities"])
        assert res.exit_code == 0, res.output
        outs.append(_png_probs(tmp_path / name))
    a, b, ens = outs
    assert len(ens) == 2  # one 8-bit sigmoid map per image
    for k in ens:  # 8-bit maps: the mean of two rounded values is within one step of the rounded mean
        assert np.abs(ens[k] - (a[k] + b[k]) / 2).max() <= 1.0
    # exactly, through the API: mean probabilities, argmax of the mean
    from medseg.engine.ensemble import open_predictor

    image = np.asarray(Image.open(next(inputs.iterdir())), dtype=np.float32)[None] / 255
    ensemble = open_predictor(runs)
    e_lab, e_prob = ensemble.predict_images([image])[0]
    p = [m.predict_images([image])[0][1] for m in ensemble.members]
    assert [str(m.cfg.data.fold) for m in ensemble.members] == ["0", "1"]
    np.testing.assert_allclose(e_prob, (p[0] + p[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(e_lab, ((p[0] + p[1]) / 2)[0] > 0.5)


def test_evaluate_an_ensemble_writes_its_own_folder(cv):
    d = cv["dir"]
    res = runner.invoke(app, ["evaluate", str(d)])
    assert res.exit_code == 0, res.output
    s = json.loads((d / "eval" / "ensemble-test-image-strict" / "summary.json").read_text())
    assert s["ensemble"] == [str(d / "fold_0"), str(d / "fold_1")] and s["cases"] == 2
    res = runner.invoke(app, ["evaluate", str(d / "fold_0"), str(d / "fold_1")])
    assert res.exit_code == 0, res.output
    found = list((d / "fold_0" / "eval").glob("ensemble-*-test-image-strict"))
    assert len(found) == 1 and len(found[0].name.split("-")[1]) == 8
    pair = json.loads((found[0] / "summary.json").read_text())
    assert pair["average"]["dice"]["mean"] == pytest.approx(s["average"]["dice"]["mean"], abs=1e-12)  # same models
    from medseg.experiments.compare import find_eval_dir

    assert find_eval_dir(d, "test") == d / "eval" / "ensemble-test-image-strict"  # `medseg compare CV_DIR ...`
    assert find_eval_dir(d, "oof") == d / "eval" / "oof-image-strict"
    res = runner.invoke(app, ["evaluate", str(d), "--split", "train"])  # the folds trained on these
    assert res.exit_code == 2 and "trained on" in res.output and "Traceback" not in res.output


def test_incompatible_runs_are_refused(cv, tmp_path):
    from medseg.engine.checkpoint import medseg_metadata
    from medseg.models import build_model

    cfg = load_config(str(cv["dir"] / "fold_0" / "config.yaml"), ["data.num_classes=3"])
    model = build_model(cfg.model.name, in_channels=1, out_channels=3, **cfg.model.kwargs)
    ck = tmp_path / "binary" / "checkpoints"
    ck.mkdir(parents=True)
    torch.save({"medseg": medseg_metadata(cfg), "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               ck / "best.ckpt")
    res = runner.invoke(app, ["predict", str(cv["dir"] / "fold_0"), str(tmp_path / "binary"), "--input",
                              str(cv["data"] / "images"), "--output", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "not compatible" in res.output and "3 classes" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_interrupted_fold_resumes_from_its_last_checkpoint(cv):
    """Last in this file: it rewrites fold_1's summary and the CV summary."""
    d = cv["dir"]
    summary = d / "fold_1" / "summary.json"
    s = json.loads(summary.read_text())
    summary.write_text(json.dumps({**s, "status": "interrupted"}))
    res = _train(["--data", str(cv["data"]), "--out", str(d), "--folds", "2", "--fold", "all"])
    assert res.exit_code == 0, res.output
    s = json.loads(summary.read_text())
    assert s["status"] == "completed" and s["resumed"] == 1 and s["epochs"] == 1  # continued, not retrained
    ck = d / "fold_0" / "checkpoints"
    assert {p.name: p.stat().st_mtime_ns for p in ck.iterdir()} == cv["fold0_checkpoints"]
