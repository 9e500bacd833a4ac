"""Binary RGB end to end: train on built-in phantom-endo, polyp-protocol evaluation, predict on Kvasir images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.builtin import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def endo_run(tmp_path_factory) -> tuple[Path, Path]:
    data = generate("phantom-endo", tmp_path_factory.mktemp("d") / "endo", seed=2, count=24, size=64)
    run = tmp_path_factory.mktemp("r") / "endo"
    sets = [
        "data.num_classes=2", "data.in_channels=3", "data.class_names=[background, lesion]",
        "data.normalize={kind: imagenet}", "data.size=[64,64]", "data.batch_size=8",
        "model.name=unet", "model.kwargs={features: [4, 8, 8, 16, 16, 4]}", "trainer.max_epochs=1", "trainer.max_time_s=null",
        "trainer.progress=false", "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5",
        "loss.terms=[{loss: dice_ce}]", "eval.protocol=polyp",
    ]
    args = ["train", "--data", str(data), "--out", str(run)]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return data, run


def test_polyp_protocol_table(endo_run):
    data, run = endo_run
    res = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert res.exit_code == 0, res.output
    out = run / "eval" / "test-polyp-strict"  # the polyp protocol is per image: strict (eval.mode auto)
    s = json.loads((out / "summary.json").read_text())
    for key in ("dice", "iou", "meanDic", "meanIoU", "Sm", "wFm", "meanEm", "maxEm", "MAE"):
        assert 0.0 <= s["polyp"][key] <= 1.0 + 1e-4, key
    assert s["polyp"]["minmax"] is True  # PraNet / MSNet min-max normalise each probability map
    header = (out / "polyp.md").read_text().splitlines()[0]
    assert header.index("mDice") < header.index("mIoU") < header.index("Fwβ") < header.index("Sα") < header.index("MAE")
    assert (out / "polyp.csv").is_file()


def test_predict_kvasir_images_at_own_size(endo_run, shared_data, tmp_path):
    _, run = endo_run
    ids = (shared_data / "kvasir-seg" / "splits" / "pranet_test.txt").read_text().split()[:3]
    src = tmp_path / "kvasir"
    src.mkdir()
    for i in ids:
        shutil.copy(shared_data / "kvasir-seg" / "images" / f"{i}.jpg", src)
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", str(run), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 0, res.output
    for i in ids:
        w, h = Image.open(src / f"{i}.jpg").size
        m = np.array(Image.open(out / f"{i}.png"))
        assert m.shape == (h, w)
        assert set(np.unique(m)) <= {0, 255}
