"""End-to-end CLI tests on tiny built-in data: train, evaluate, predict, models, data, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from tiny_runs import TINY_UNET, make_ct, train_tiny

runner = CliRunner()

TINY = [*TINY_UNET, "trainer.overlays=2"]  # the U-Net learns the liver in two tiny epochs (the tests below need it)



@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    return make_ct(tmp_path_factory, count=24)


@pytest.fixture(scope="module")
def run_dir(ct_data, tmp_path_factory) -> Path:
    return train_tiny(ct_data, tmp_path_factory, TINY)


def test_train_writes_the_run_folder(run_dir):
    for rel in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.csv", "summary.json", "curves.png"):
        assert (run_dir / rel).is_file(), rel
    assert len(list((run_dir / "overlays").glob("*.png"))) == 2
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["epochs"] == 2 and s["steps"] > 0 and 0.0 <= s["best_val"] <= 1.0
    assert len(s["history"]) == 2 and "val/dice" in s["history"][-1]
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/dice/liver", "val/dice/vessel", "train/lr", "train/epoch_s"} <= set(header)  # curves.png's inputs
    card = (run_dir / "README.md").read_text()
    assert "## Intended use and limits" in card and f"{s['data']['train_cases']} training" in card
    import torch

    ck = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True, map_location="cpu")
    assert ck["medseg"]["model"] == "unet" and ck["medseg"]["config"]["data"]["num_classes"] == 7


def test_quickstart_trains_its_paper_model_with_deep_supervision(ct_data, tmp_path):
    """The default recipe's model (SNet) and both loss terms (logits + aux/fused), at tiny widths."""
    out = tmp_path / "qs"
    args = ["train", "--data", str(ct_data), "--out", str(out)]
    for s in ("data.size=[64,64]", "model.kwargs={cnn_channels: [4, 4, 8, 8, 8], vit_dims: [4, 8, 8, 8]}",
              "trainer.max_epochs=1", "trainer.max_time_s=null", "trainer.progress=false", "trainer.overlays=0"):
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["recipe"] == "quickstart" and s["model"] == "snet" and s["epochs"] == 1
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/dice_ce/logits", "train/dice_ce/aux/fused"} <= set(header)


def test_evaluate_writes_tables(run_dir, ct_data):
    res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(ct_data), "--split", "test", "--mode", "strict"])
    assert res.exit_code == 0, res.output
    out = run_dir / "eval" / "test-image-strict"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "strict" and summary["cases"] == len((ct_data / "splits/test.txt").read_text().split())
    assert "liver" in (out / "table.md").read_text()
    assert (out / "cases.csv").read_text().count("\n") > summary["cases"]
    assert Image.open(out / "cases.png").format == "PNG"
    card = (run_dir / "README.md").read_text()
    assert card.count("### eval/test-image-strict") == 1 and "![per-case Dice](eval/test-image-strict/cases.png)" in card


def test_evaluate_2d_run_volume_wise_on_the_hu_volumes(run_dir, ct_data, tmp_path):
    """A run trained on the windowed PNG slices, evaluated on DIR/volumes (HU NIfTI) through --set."""
    from medseg.data.builtin import CT_WINDOW

    level, width = CT_WINDOW
    assert (level - width / 2, level + width / 2) == (-160, 240)  # the PNGs' window, as HU
    vols = ct_data / "volumes"
    dices = {}
    for name, norm in (("window", "{kind: window, window: [-160, 240]}"), ("raw", "{kind: unit}")):
        out = tmp_path / name
        res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(vols), "--split", "test", "--out", str(out),
                                  "--set", "data.format=nnunet_raw", "--set", f"data.normalize={norm}",
                                  "--set", "eval.protocol=volume"])
        assert res.exit_code == 0, res.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["protocol"] == "volume" and summary["data"] == str(vols)
        assert summary["cases"] == len((vols / "splits" / "test.txt").read_text().split())
        dices[name] = summary["classes"]["1"]["dice"]["mean"]  # the liver: what two tiny epochs learn
    assert dices["window"] > dices["raw"] + 0.1, dices  # HU read as if in [0, 1] is another image


def test_predict_writes_masks_at_each_images_own_size(run_dir, ct_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, p in enumerate(sorted((ct_data / "images").glob("*.png"))[:2]):
        img = Image.open(p)
        img.resize((50 + 13 * i, 70 + 7 * i)).save(src / f"im{i}.png")
    shutil.copy(sorted((ct_data / "images").glob("*.png"))[2], src / "orig.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["predict", str(run_dir), "--input", str(src), "--output", str(out), "--overlay", "--probabilities"])
    assert res.exit_code == 0, res.output
    for p in src.iterdir():
        m = np.array(Image.open(out / p.name))
        assert m.shape == np.array(Image.open(p)).shape[:2]
        assert m.max() < 7
        assert (out / "overlays" / p.name).is_file()
    assert len(list((out / "probabilities").glob("im0_c*.png"))) == 7


def test_models_lists_registry():
    res = runner.invoke(app, ["models", "--no-params"])
    assert res.exit_code == 0 and "unet" in res.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--recipe", "nope"], "unknown recipe"),
        (["train", "--model", "nope"], "unknown model"),
        (["train", "--data", "/does/not/exist"], "data folder not found"),
        (["train", "--set", "optim.lr"], "key=value"),
        (["train", "--data", "{ct}", "--set", "loss.terms=[{loss: nope}]"], "loss.terms[0]: unknown loss 'nope'; valid names:"),
        (["train", "--data", "{ct}", "--set", "model.kwargs={featurs: [4]}"], "model 'snet': bad model.kwargs"),
        (["train", "--data", "{ct}", "--set", "data.size=[72,64]"], "data.size: 72x64 is not a multiple of model snet's stride 32; nearest valid size is 64x64"),
        (["train", "--data", "{ct}", "--set", "data.multiscale=[64,40]"], "data.multiscale: 40x40 is not a multiple"),
        (["train", "--data", "{ct}", "--set", "loss.terms=[{loss: ce}, {loss: ce, output: aux/deep}]"],
         "loss.terms[1] (ce): model snet has no output 'aux/deep'; available: logits, aux/fused"),
        (["train", "--data", "{ct}", "--set", "trainer.val_metric=iou"], "trainer.val_metric"),
        (["evaluate", "/does/not/exist"], "run folder not found"),
        (["evaluate", "/does/not/exist", "--set", "model.name=unet"], "only data.* and eval.* keys"),
        (["evaluate", "/does/not/exist", "--set", "data.num_classes=3"], "fixed by the trained model"),
        (["predict", "/does/not/exist", "--input", "x", "--output", "y"], "run folder not found"),
        (["data", "builtin", "nope", "--out", "x"], "unknown built-in"),
        (["evaluate", "x", "--mode", "loose"], "--mode"),
        (["stats", "--models", "nope"], "unknown model"),
        (["stats", "--size", "abc"], "--size"),
        (["stats", "--format", "csv"], "--format"),
        (["stats", "--models", "unet", "--size", "100"], "nearest valid size is 96x96"),
        (["export", "onnx", "/does/not/exist", "--out", "x.onnx"], "run folder not found"),
        (["predict", "/does/not/exist.onnx", "--input", "x", "--output", "y"], "ONNX file not found"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle, ct_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder runs/<name>-<time> would appear here
    res = runner.invoke(app, [a.replace("{ct}", str(ct_data)) for a in args])
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split())  # rich may wrap a long line
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_data_error_leaves_no_run_folder(tmp_path, monkeypatch):
    """A bad data folder fails before the run folder exists (default and --out)."""
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad / "images" / "a.png")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--out", str(tmp_path / "run")]):
        res = runner.invoke(app, ["train", "--data", str(bad), *extra])
        assert res.exit_code == 2, res.output
        assert "a.png" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run").exists()


def test_predict_and_evaluate_fast_path_equal_plain_path(run_dir, ct_data, tmp_path):
    """--no-fast (the model as built) writes the same masks and metrics as the default fast path."""
    src = ct_data / "images"
    outs = {}
    for flag in ("--fast", "--no-fast"):
        out = tmp_path / flag
        res = runner.invoke(app, ["predict", str(run_dir), "--input", str(src), "--output", str(out), flag])
        assert res.exit_code == 0, res.output
        outs[flag] = {p.name: np.array(Image.open(p)) for p in sorted(out.glob("*.png"))}
    assert outs["--fast"].keys() == outs["--no-fast"].keys() and len(outs["--fast"]) == 24
    differing = sum(int((outs["--fast"][k] != outs["--no-fast"][k]).sum()) for k in outs["--fast"])
    assert differing <= 5  # argmax ties at float rounding only (logits equal to 1e-4)
    dices = []
    for flag in ("--fast", "--no-fast"):
        out = tmp_path / f"eval{flag}"
        res = runner.invoke(app, ["evaluate", str(run_dir), "--data", str(ct_data), "--split", "test", "--out", str(out), flag])
        assert res.exit_code == 0, res.output
        dices.append(json.loads((out / "summary.json").read_text())["average"]["dice"]["mean"])
    assert dices[0] == pytest.approx(dices[1], abs=1e-3)


def test_stats_cli_table_and_json(tmp_path):
    out = tmp_path / "stats.md"
    args = ["stats", "--models", "unet", "--size", "64", "--batch", "2", "--repeats", "2", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith("| model |") and "| unet | 64x64 | 3→1 | 31,113,217 |" in text
    res = runner.invoke(app, args[:-2] + ["--format", "json", "--no-fast"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout[res.stdout.index("["):])[0]
    assert row["model"] == "unet" and row["fast"] is False and row["size"] == [64, 64]
    assert row["params_trainable"] == 31_113_217 and row["gmacs"] > 0 and row["latency_ms"] > 0


def test_export_onnx_then_predict_and_evaluate_with_the_file(run_dir, ct_data, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_file = tmp_path / "model.onnx"
    res = runner.invoke(app, ["export", "onnx", str(run_dir), "--out", str(onnx_file)])
    assert res.exit_code == 0, res.output
    assert onnx_file.is_file()
    src = ct_data / "images"
    masks = {}
    for source in (run_dir, onnx_file):
        out = tmp_path / f"pred-{source.name}"
        res = runner.invoke(app, ["predict", str(source), "--input", str(src), "--output", str(out)])
        assert res.exit_code == 0, res.output
        masks[source.name] = {p.name: np.array(Image.open(p)) for p in sorted(out.glob("*.png"))}
    a, b = masks[run_dir.name], masks[onnx_file.name]
    assert a.keys() == b.keys() and len(a) == 24
    assert sum(int((a[k] != b[k]).sum()) for k in a) <= 5
    res = runner.invoke(app, ["evaluate", str(onnx_file), "--data", str(ct_data), "--split", "test"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model-eval" / "test-image-strict" / "summary.json").is_file()  # quickstart: strict
