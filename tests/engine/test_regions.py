"""``data.targets: regions`` (MDA-U-Net's two sigmoid channels: organ incl. tumour, tumour): targets, the
region BCE, nnU-Net's region decoding in validation / Predictor / evaluation, and the config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medseg.config import Config, ConfigError, load_config
from medseg.engine.decode import logits_to_labels, to_labels, to_probabilities
from medseg.engine.predict import Predictor
from medseg.losses import Criterion
from medseg.losses._registry import build_loss
from medseg.losses.compound import region_targets
from medseg.models import SegOutput

# One row of 4 pixels: (organ logit, tumour logit) -> label by nnU-Net's region order (later region wins)
LOGITS = [(2.0, -2.0), (2.0, 2.0), (-2.0, -2.0), (-2.0, 2.0)]
LABELS = [1, 2, 0, 2]


def _logits() -> torch.Tensor:
    return torch.tensor(LOGITS).T.reshape(1, 2, 1, 4)


def test_region_targets_and_decoding_by_hand() -> None:
    target = torch.tensor([[[0, 1, 2]]])
    # channel 0 = organ incl. tumour (label >= 1), channel 1 = tumour (label >= 2)
    assert region_targets(target, 2).tolist() == [[[[0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0]]]]
    probs = to_probabilities(_logits(), "regions")
    s = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(probs[0, :, 0, 1], torch.tensor([s, s]))  # sigmoid per channel, not softmax
    assert to_labels(probs, "regions")[0, 0].tolist() == LABELS
    assert logits_to_labels(_logits(), "regions")[0, 0].tolist() == LABELS
    # classes: the same 2 channels would be a 2-class softmax (argmax), 1 channel binary
    assert to_labels(to_probabilities(_logits(), "classes"), "classes")[0, 0].tolist() == [0, 0, 0, 1]
    assert logits_to_labels(_logits()[:, :1]).flatten().tolist() == [1, 1, 0, 0]


def test_region_bce_by_hand() -> None:
    loss = build_loss("region_bce")
    logits = torch.tensor([[[[0.0]], [[2.0]]]])  # [B=1, C=2, 1, 1]
    target = torch.tensor([[[1]]])  # organ: region 0 positive, tumour region negative
    # mean of -log(sigmoid(0)) = log 2 and -log(1 - sigmoid(2)) = log(1 + e^2)
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_criterion_checks_losses_against_targets() -> None:
    cfg = load_config("mda_unet_kits", ["preset=paper_text"])
    crit = Criterion.from_config(cfg.loss, targets=cfg.data.targets)
    out = SegOutput(torch.zeros(2, 2, 8, 8), {"additional": torch.zeros(2, 2, 8, 8)})
    total, _ = crit(out, torch.randint(0, 3, (2, 8, 8)))
    assert total.item() == pytest.approx(math.log(2) * 1.1, rel=1e-6)  # L_s + 0.1 L_a, each log 2 at logits 0
    with pytest.raises(ConfigError, match=r"loss.terms\[0\]: loss 'dice_ce' needs data.targets: classes"):
        Criterion.from_config(load_config("mda_unet_kits").loss, targets="regions")
    with pytest.raises(ConfigError, match=r"loss 'region_bce' needs data.targets: regions"):
        Criterion.from_config(cfg.loss, targets="classes")


def test_paper_text_presets_build_two_sigmoid_channels() -> None:
    for preset, lam in (("paper_text", 0.1), ("paper_text_lambda10", 10.0)):
        for recipe in ("mda_unet_kits", "mda_unet_pancreas", "mda_unet_liver"):
            cfg = load_config(recipe, [f"preset={preset}"])
            assert cfg.data.targets == "regions" and cfg.data.out_channels == 2 and cfg.data.num_classes == 3
            assert cfg.model.kwargs == {"channel_attention": "paper"}
            assert [(t.loss, t.output, t.weight) for t in cfg.loss.terms] == [
                ("region_bce", "logits", 1.0), ("region_bce", "aux/additional", lam)]
    with pytest.raises(ConfigError, match="data.targets is fixed by the trained model"):
        from medseg.config import check_run_overrides

        check_run_overrides(["data.targets=classes"])


class _Fixed(nn.Module):
    """Returns the same logits for any batch (a stand-in for a trained two-channel model)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", logits)

    def forward(self, x: torch.Tensor) -> SegOutput:
        return SegOutput(self.out.expand(x.shape[0], -1, -1, -1).clone())


@pytest.mark.parametrize("resize_back", ["probabilities", "labels"])
def test_predictor_decodes_regions_to_background_organ_tumour(resize_back: str) -> None:
    cfg = Config.model_validate({
        "data": {"num_classes": 3, "in_channels": 1, "size": [1, 4], "targets": "regions",
                 "normalize": {"kind": "unit"}},
        "eval": {"resize_back": resize_back},
    })
    pred = Predictor(_Fixed(_logits()), cfg, fast=False)
    labels, probs = pred.predict_images([np.zeros((1, 1, 4), np.float32)])[0]
    assert labels.tolist() == [LABELS] and probs.shape == (2, 1, 4)
    np.testing.assert_allclose(probs[:, 0, 1], [1 / (1 + math.exp(-2.0))] * 2, rtol=1e-6)
    # an image twice the size: the label map comes back at its size, each pixel a 2x2 block
    labels, _ = pred.predict_images([np.zeros((1, 2, 8), np.float32)])[0]
    assert labels.tolist() == [np.repeat(LABELS, 2).tolist()] * 2
    # the same model under class targets would argmax the two channels: a different (wrong) map
    classes = Predictor(_Fixed(_logits()), cfg.model_copy(update={"data": cfg.data.model_copy(update={"targets": "classes"})}),
                        fast=False)
    assert classes.predict_images([np.zeros((1, 1, 4), np.float32)])[0][0].tolist() == [[0, 0, 0, 1]]
