"""Polyp protocol on several test sets: a tiny PraNet layout, one table row per set, checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medseg.config import Config
from medseg.data.readers import build_reader
from medseg.engine.evaluate import evaluate_splits, expand_splits

pytest.importorskip("py_sod_metrics")

SIZE = 32


def _set(folder: Path, n: int, seed: int) -> None:
    """``n`` RGB images with a 4x4 polyp at (8..12, 8..12) in 0/255 masks."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        m = np.zeros((SIZE, SIZE), np.uint8)
        m[8:12, 8:12] = 255
        Image.fromarray(m).save(folder / "masks" / f"{i}.png")


@pytest.fixture(scope="module")
def pranet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("polyp")
    _set(root / "TrainDataset", 2, seed=0)
    _set(root / "TestDataset" / "CVC-300", 2, seed=1)
    _set(root / "TestDataset" / "Kvasir", 3, seed=2)
    return root


def _cfg(root: Path) -> Config:
    return Config.model_validate({
        "data": {"format": "pranet", "root": str(root), "num_classes": 2, "in_channels": 3,
                 "class_names": ["background", "polyp"], "size": [SIZE, SIZE], "train_split": "train",
                 "val_split": None, "test_split": "test"},
        "model": {"name": "unet", "kwargs": {"features": [4, 8, 8, 16, 16, 4]}},
        "eval": {"protocol": "polyp"},
    })


class KnownPredictor:
    """CVC-300: prob = gt. Kvasir: 0.4 on the polyp's left half, 0.1 elsewhere (all below 0.5)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def predict_case(self, case):
        gt = case.label.astype(np.float32)
        if case.id.startswith("Kvasir/"):
            prob = np.full(gt.shape, 0.1, np.float32)
            prob[8:12, 8:10] = 0.4
        else:
            prob = gt
        return (prob >= 0.4).astype(np.int64), prob[None]


def test_expand_splits(pranet_root: Path) -> None:
    reader = build_reader(_cfg(pranet_root).data)
    assert reader.test_sets() == ["CVC-300", "Kvasir"]
    assert expand_splits(reader, "test") == (["CVC-300", "Kvasir"], True)
    assert expand_splits(reader, "Kvasir") == (["Kvasir"], False)
    assert expand_splits(reader, "Kvasir, CVC-300") == (["Kvasir", "CVC-300"], True)
    assert expand_splits(reader, "test,Kvasir") == (["CVC-300", "Kvasir"], True)


def test_one_row_per_test_set_with_hand_values(pranet_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(pranet_root)
    reader = build_reader(cfg.data)
    splits, _ = expand_splits(reader, "test")
    out = tmp_path / "eval"
    s = evaluate_splits(KnownPredictor(cfg), reader, splits, mode="paper", protocol="polyp", out=out)
    lines = (out / "polyp.md").read_text().splitlines()
    assert lines[0].startswith("| Dataset | mDice@0.5 | mIoU@0.5 | mDice PraNet | mIoU PraNet | Fwβ |")
    rows = {ln.split(" | ")[0][2:]: [float(c) for c in ln.strip("| ").split(" | ")[1:]] for ln in lines[2:]}
    assert list(rows) == ["CVC-300", "Kvasir"]  # one row each, not one pooled row
    assert rows["CVC-300"][:2] == [1.0, 1.0]
    # Kvasir after per-image min-max: 1 on 8 of the 16 polyp pixels, 0 elsewhere -> Dice 16/24, IoU 8/16
    # (without the min-max nothing reaches 0.5 and both would be 0)
    assert rows["Kvasir"][:2] == pytest.approx([0.667, 0.5], abs=1e-3)
    assert s["polyp"]["Kvasir"]["dice"] == pytest.approx(2 / 3) and s["polyp"]["Kvasir"]["minmax"] is True
    assert s["splits"] == ["CVC-300", "Kvasir"] and s["cases"] == 5
    for name, n in (("CVC-300", 2), ("Kvasir", 3)):
        with open(out / name / "polyp.csv", newline="") as f:
            names = [r["name"] for r in csv.DictReader(f)]
        assert names == [f"{name}/{i}" for i in range(n)]
        assert json.loads((out / name / "summary.json").read_text())["cases"] == n
    assert json.loads((out / "summary.json").read_text())["sets"]["Kvasir"]["polyp"]["n_images"] == 3
    table = (out / "table.md").read_text()
    assert "| Dataset | Dice (%) |" in table and "| Kvasir |" in table


def _run_folder(cfg: Config, path: Path) -> Path:
    """A run folder holding an untrained model's checkpoint (Predictor.from_run needs nothing else)."""
    from medseg.engine.checkpoint import medseg_metadata
    from medseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", in_channels=3, out_channels=1, **cfg.model.kwargs)
    (path / "checkpoints").mkdir(parents=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"medseg": medseg_metadata(cfg), "state_dict": state}, path / "checkpoints" / "last.ckpt")
    return path


def test_cli_split_test_evaluates_every_pranet_set(pranet_root: Path, tmp_path: Path) -> None:
    from medseg.cli import app

    run = _run_folder(_cfg(pranet_root), tmp_path / "run")
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert res.exit_code == 0, res.output
    out = run / "eval" / "test-polyp-strict"
    assert [ln.split(" | ")[0] for ln in (out / "polyp.md").read_text().splitlines()[2:]] == ["| CVC-300", "| Kvasir"]
    assert (out / "CVC-300" / "polyp.csv").is_file() and (out / "Kvasir" / "polyp.csv").is_file()

    res = runner.invoke(app, ["evaluate", str(run), "--split", "Kvasir"])  # one split: the usual layout
    assert res.exit_code == 0, res.output
    single = run / "eval" / "Kvasir-polyp-strict"
    assert len((single / "polyp.md").read_text().splitlines()) == 3 and (single / "polyp.csv").is_file()

    res = runner.invoke(app, ["evaluate", str(run), "--split", "Kvasir,nope"])
    assert res.exit_code == 2 and "unknown split 'nope'" in res.output
    assert not (run / "eval" / "Kvasir+nope-polyp-strict" / "Kvasir").exists()  # checked before any work


def test_run_without_validation_is_evaluated_at_its_last_epoch(pranet_root: Path, tmp_path: Path, caplog) -> None:
    """No best.ckpt (data.val_split: null, the TransUNet protocol): ``best`` falls back to last.ckpt, said so."""
    from medseg.engine.evaluate import evaluate_run

    run = _run_folder(_cfg(pranet_root), tmp_path / "run")
    with caplog.at_level("INFO", logger="medseg.engine.predict"):
        summary = evaluate_run(run, split="Kvasir", out_dir=tmp_path / "e")
    assert summary["checkpoint"] == "last" and "without validation" in summary["checkpoint_note"]
    assert "using last.ckpt" in caplog.text
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["checkpoint"] == "last"
    assert evaluate_run(run, split="Kvasir", checkpoint="last", out_dir=tmp_path / "f")["checkpoint"] == "last"
