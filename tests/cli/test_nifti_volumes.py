"""End to end on NIfTI volumes (issue 6): phantom-ct volumes in the nnU-Net layout -> train mda_unet -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.builtin import PHANTOM_CT_CLASSES

runner = CliRunner()

TINY_MDA = [
    "data.num_classes=7",
    f"data.class_names=[{', '.join(PHANTOM_CT_CLASSES)}]",
    "data.size=[64,64]",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.max_train_cases=2",
    "data.max_val_cases=1",
    "model.kwargs={K: 10, channels: [4, 8, 8, 16, 16]}",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.accumulate_grad_batches=1",
    "trainer.max_time_s=null",
    "trainer.progress=false",
    "trainer.overlays=0",
]


def test_mda_unet_trains_on_nifti_volumes_and_predicts_a_volume(tmp_path: Path) -> None:
    data = tmp_path / "ct"
    res = runner.invoke(app, ["data", "builtin", "phantom-ct", "--out", str(data), "--count", "3"])
    assert res.exit_code == 0, res.output
    volumes = data / "volumes"
    assert (volumes / "dataset.json").is_file() and list((volumes / "labelsTr").glob("phantom_*.nii.gz"))
    run = tmp_path / "run"
    args = ["train", "--recipe", "mda_unet_kits", "--data", str(volumes), "--out", str(run)]
    for s in TINY_MDA:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2

    case = sorted((volumes / "imagesTs").glob("*_0000.nii.gz"))[0]
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", str(run), "--input", str(case), "--output", str(out)])
    assert res.exit_code == 0, res.output
    written = out / case.name.replace("_0000.nii.gz", ".nii.gz")  # the nnU-Net channel suffix is dropped
    assert sorted(p.name for p in out.iterdir()) == [written.name]
    src, pred = nib.load(str(case)), nib.load(str(written))
    assert pred.shape == src.shape == (96, 96, 32)
    np.testing.assert_allclose(pred.affine, src.affine)
    labels = np.unique(np.asanyarray(pred.dataobj))
    assert set(labels.tolist()) <= set(range(7)) and pred.get_data_dtype() == np.uint8
