"""The Python API (``medseg.predict`` and friends) on a tiny trained run, and the README's example run as is."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import ct_data, run_dir  # noqa: F401  (the tiny-run fixtures of the CLI tests)

import medseg

README = Path(__file__).resolve().parents[2] / "README.md"


def test_import_medseg_is_lazy_and_exports_the_public_api():
    code = "import sys, medseg; assert 'torch' not in sys.modules; print(sorted(medseg.__all__))"
    env = dict(os.environ, PYTHONPATH=str(Path(medseg.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    for name in ("build_model", "list_models", "Predictor", "load_run", "predict"):
        assert name in out
    from medseg.engine.predict import Predictor

    assert medseg.Predictor is Predictor and callable(medseg.predict) and callable(medseg.load_run)
    with pytest.raises(AttributeError):
        medseg.nope  # noqa: B018


def test_readme_python_example_runs(run_dir, ct_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(run_dir)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ct").symlink_to(ct_data)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    h, w = np.asarray(Image.open(ct_data / "images" / "ct_0000.png")).shape[:2]
    assert "'unet'" in out and f"({h}, {w}) [0 1" in out  # the labels' shape and classes (background first)


def test_predict_accepts_every_usual_image_form(run_dir, ct_data):  # noqa: F811
    predictor = medseg.load_run(run_dir)
    path = ct_data / "images" / "ct_0001.png"
    ref = medseg.predict(predictor, path)
    grey = np.asarray(Image.open(path))  # [H, W] uint8
    assert grey.ndim == 2 and ref.shape == grey.shape and ref.dtype == np.int64 and ref.max() > 0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    forms = {
        "path str": str(path),
        "HxW uint8": grey,
        "HxW float [0,1]": grey / 255.0,
        "HxWx3 uint8": rgb,
        "3xHxW uint8": rgb.transpose(2, 0, 1).copy(),
        "HxWx4 uint8 (RGBA)": np.concatenate([rgb, np.full_like(grey, 255)[..., None]], axis=2),
        "1xHxW tensor": torch.from_numpy(grey / 255.0).float()[None],
        "1x3xHxW tensor": torch.from_numpy(rgb).permute(2, 0, 1)[None],
        "PIL L": Image.open(path),
        "PIL RGB": Image.open(path).convert("RGB"),
    }
    for what, image in forms.items():
        assert np.array_equal(medseg.predict(predictor, image), ref), what
    assert np.array_equal(medseg.predict(run_dir, grey), ref)  # a run folder is loaded on the way
    # a smaller image: prepared at the training size, predicted back at its own size
    assert medseg.predict(predictor, grey[:50, :70]).shape == (50, 70)


@pytest.mark.parametrize(
    "image,needle",
    [
        (np.full((64, 64, 3), 200.0, np.float32), "values up to 200 but this run expects \\[0, 1\\]"),
        (np.zeros((5, 64, 64), np.float32), "cannot tell the channel axis"),
        (np.zeros((2, 1, 64, 64), np.float32), "expected one 2D image"),
        (np.zeros((64, 64, 2), np.float32), "image has 2 channels but data.in_channels is 1"),
        (np.zeros((64, 64), np.complex64), "dtype complex64"),
        ("missing.png", "image file not found"),
    ],
)
def test_bad_inputs_are_one_line_errors(run_dir, image, needle):  # noqa: F811
    predictor = medseg.load_run(run_dir)
    with pytest.raises(medseg.MedsegError, match=needle) as err:
        medseg.predict(predictor, image)
    assert "\n" not in str(err.value)


def test_predict_a_nifti_volume_and_raw_intensities_for_window_runs(run_dir, ct_data, caplog):  # noqa: F811
    """A volume file gives [D, H, W] labels, slice by slice; a ``window`` run takes raw HU (int16 kept as is)."""
    import nibabel as nib

    from medseg.config import NormalizeConfig

    path = sorted((ct_data / "volumes" / "imagesTr").glob("*.nii.gz"))[0]
    predictor = medseg.load_run(run_dir)
    assert predictor.normalize_for("nifti").window == (-160, 240)  # recorded at training: the PNGs' window
    raw = medseg.load_run(run_dir)
    raw.cfg.data.inputs.normalize = {}  # a run without that record: raw HU into a [0, 1] run
    with caplog.at_level(logging.WARNING, logger="medseg.engine.predict"):
        medseg.predict(raw, path)  # a warning, as `medseg predict` and `evaluate` give on such files
        medseg.predict(predictor, path)  # none: the recorded window maps the HU
    assert sum("far from the training" in r.getMessage() for r in caplog.records) == 1  # once, not once a slice
    predictor.cfg.data.normalize = NormalizeConfig(kind="window", window=(-160, 240))  # arrays too, as the volume
    predictor._transforms = {}
    labels = medseg.predict(predictor, path)
    hu = np.asarray(nib.load(path).dataobj)  # the file's own axis order
    assert labels.ndim == 3 and labels.max() > 0
    z = labels.shape[0] // 2
    from medseg.data.nnunet_raw import load_nifti_case

    slice_hu = load_nifti_case(path, in_channels=1).image[0, z]  # [H, W] float HU as the reader gives it
    assert hu.size == labels.size
    assert np.array_equal(medseg.predict(predictor, slice_hu.round().astype(np.int16)), labels[z])


def test_predictor_predict_images_takes_rgb_uint8_and_warns_on_0_255_floats(caplog):
    """Predictor.predict_images (no run folder): an RGB uint8 [H, W, 3] image for a grey run, and a loud 0-255 float."""
    from medseg.config import load_config
    from medseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=7, features=(4, 8, 8, 16, 16, 4))
    predictor = medseg.Predictor(model, load_config("quickstart", ["data.size=[64,64]"]))
    rgb = (np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8)
    grey = (rgb / np.float32(255) * np.float32([0.299, 0.587, 0.114])).sum(-1, dtype=np.float32)
    (labels, probs), (labels2, probs2) = predictor.predict_images([rgb, grey])
    assert labels.shape == (50, 60) and probs.shape == (7, 50, 60)
    assert np.allclose(probs, probs2, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="medseg.engine.predict"):
        predictor.predict_images([grey * 255, grey * 255])
    warned = [r.getMessage() for r in caplog.records if "but this run expects [0, 1]" in r.getMessage()]
    assert len(warned) == 1 and "pass uint8 or divide by 255" in warned[0]  # once per Predictor
