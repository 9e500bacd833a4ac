"""Predictor: the fast path follows eval.fast, and eval.tta averages the four mirrorings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from medseg.config import load_config
from medseg.engine.predict import Predictor
from medseg.models import SegOutput, build_model


class _Ramp(nn.Module):
    """logits = x * r with r a fixed ramp over H and W: not mirror-symmetric, so TTA changes the output."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        r = torch.arange(h, dtype=torch.float32)[:, None] * 0.3 - torch.arange(w, dtype=torch.float32)[None, :] * 0.2
        self.register_buffer("r", r[None, None])

    def forward(self, x: torch.Tensor) -> SegOutput:
        return SegOutput(x[:, :1] * self.r)


def test_tta_is_the_mean_of_the_four_mirrorings():
    cfg = load_config("quickstart", ["eval.tta=true", "data.num_classes=2"])
    x = torch.randn(2, 1, 4, 6)
    p = Predictor(_Ramp(4, 6), cfg).probabilities(x)
    r = _Ramp(4, 6).r
    expected = (torch.sigmoid(x * r) + torch.sigmoid(x * r.flip(3)) + torch.sigmoid(x * r.flip(2))
                + torch.sigmoid(x * r.flip((2, 3)))) / 4
    assert torch.allclose(p, expected, atol=1e-6)
    plain = Predictor(_Ramp(4, 6), load_config("quickstart", ["data.num_classes=2"])).probabilities(x)
    assert torch.allclose(plain, torch.sigmoid(x * r)) and not torch.allclose(plain, p)


def _bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fast_path_follows_eval_fast_and_equals_the_plain_path():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    outs = {}
    for fast in (True, False):
        cfg = load_config("quickstart", [f"eval.fast={str(fast).lower()}"])
        torch.manual_seed(0)
        model = build_model("unet", in_channels=1, out_channels=7, features=(4, 8, 8, 16, 16, 4))
        n_bn = _bn_count(model)
        pred = Predictor(model, cfg)
        assert pred.fast is fast
        outs[fast] = pred.logits(x)
        assert (_bn_count(pred.model) < n_bn) is fast  # folded only on the fast path
    assert (outs[True] - outs[False]).abs().max().item() <= 1e-4
    cfg = load_config("quickstart", ["eval.fast=true"])
    assert Predictor(build_model("unet", in_channels=1, out_channels=7), cfg, fast=False).fast is False


def test_resize_back_labels_is_transunets_argmax_then_order0_zoom():
    from medseg.engine.predict import zoom_labels

    lab = np.array([[0, 1], [2, 3]])
    assert zoom_labels(lab, (4, 4)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert zoom_labels(lab, (2, 2)) is lab
    # through the Predictor: labels at the training size (argmax), then the zoom; probabilities bilinear
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=7, features=(4, 8, 8, 16, 16, 4))
    image = np.random.default_rng(0).random((1, 50, 70)).astype(np.float32)
    outs = {}
    for mode in ("labels", "probabilities"):
        cfg = load_config("quickstart", [f"eval.resize_back={mode}", "data.size=[32,32]"])
        pred = Predictor(copy.deepcopy(model), cfg)
        outs[mode] = pred.predict_images([image])[0]
        x = pred.preprocess(image)[None]
        small = pred.probabilities(x).argmax(1)[0].numpy()
    assert outs["labels"][0].shape == (50, 70)
    assert np.array_equal(outs["labels"][0], zoom_labels(small, (50, 70)))
    assert np.allclose(outs["labels"][1], outs["probabilities"][1], atol=1e-5)  # same probability maps


def test_predictor_runs_mgrad_feedback_passes_at_test_time():
    torch.manual_seed(0)
    model = build_model("mgrad_unet", in_channels=1, out_channels=4, encoder_channels=(4, 8, 8, 16, 16), width=4)
    x = torch.randn(1, 1, 32, 32)
    model.eval()
    with torch.inference_mode():
        one = model(x).logits
        feedback = None
        for _ in range(3):
            out = model(x, feedback=feedback)
            feedback = out.extras["feedback"]
        three = out.logits
    for iters, ref in ((1, one), (3, three)):
        cfg = load_config("mgrad_unet_acdc", [f"eval.feedback_iters={iters}"])
        got = Predictor(copy.deepcopy(model), cfg, fast=False).logits(x)
        assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(one, three)


def test_nifti_output_names_drop_the_channel_suffix(tmp_path):
    """``case_00001_0000.nii.gz`` -> ``case_00001``; its ``_0001`` sibling is read with it, not predicted alone."""
    from medseg.engine.predict import _stem, list_inputs

    for name in ("case_00001_0000.nii.gz", "case_00001_0001.nii.gz", "la_003.nii.gz", "b_0000.nii", "im_0000.png"):
        (tmp_path / name).write_bytes(b"")
    assert [_stem(p) for p in list_inputs(tmp_path)] == ["b", "case_00001", "im_0000", "la_003"]
    assert _stem(tmp_path / "case_00001_0001.nii.gz") == "case_00001_0001"
    assert list_inputs(tmp_path / "case_00001_0001.nii.gz") == [tmp_path / "case_00001_0001.nii.gz"]


class _PixelLinear(nn.Module):
    """logits = a * x + b per pixel (a, b per class): each slice's output depends only on that slice."""

    def forward(self, x: torch.Tensor) -> SegOutput:
        a = torch.tensor([-1.0, 0.5, 2.0])[None, :, None, None]
        return SegOutput(x[:, :1] * a + torch.tensor([0.0, 0.1, -0.3])[None, :, None, None])


@pytest.mark.parametrize("sets", [["eval.resize_back=labels"], ["eval.resize_back=probabilities"],
                                  ["eval.inferer=sliding_window", "eval.sw_overlap=0.5"]])
def test_volume_in_batches_equals_the_slices_one_by_one(sets):
    """D = 5 slices, 2 a forward pass (batches 2, 2, 1), 20 x 28 resized to 16 x 16 and
    back: each slice of ``predict_volume`` equals ``predict_images`` on that slice alone; the middle slice's
    probabilities by hand where no resizing is involved (sliding window at the slice's own size)."""
    cfg = load_config("quickstart", ["data.num_classes=3", "data.size=[16,16]", "data.normalize={kind: unit}",
                                     *sets])
    p = Predictor(_PixelLinear(), cfg, batch_size=2)
    vol = np.random.default_rng(0).uniform(0, 1, (1, 5, 20, 28)).astype(np.float32)
    labels, probs = p.predict_volume(vol, kind="nifti")
    assert labels.shape == (5, 20, 28) and probs.shape == (3, 5, 20, 28)
    for z in range(5):
        lab_z, prob_z = p.predict_images([vol[:, z]], kind="nifti")[0]
        assert (labels[z] == lab_z).all()
        np.testing.assert_allclose(probs[:, z], prob_z, atol=1e-6)
    if "eval.inferer=sliding_window" in sets:
        logits = vol[0, 2] * np.array([-1.0, 0.5, 2.0])[:, None, None] + np.array([0.0, 0.1, -0.3])[:, None, None]
        expected = np.exp(logits) / np.exp(logits).sum(0)
        np.testing.assert_allclose(probs[:, 2], expected, atol=1e-5)
