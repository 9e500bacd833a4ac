"""engine/train.py: the checks that run before training."""

from __future__ import annotations

import pytest

from medseg.config import ConfigError, load_config
from medseg.engine.train import check_loss_outputs, check_training_sizes
from medseg.models import build_model


def test_training_sizes_must_fit_the_stride():
    check_training_sizes(load_config("quickstart", ["data.size=[96,160]", "data.multiscale=[64,96]"]), 16)
    with pytest.raises(ConfigError, match="data.size: 96x100 .* stride 16; nearest valid size is 96x96"):
        check_training_sizes(load_config("quickstart", ["data.size=[96,100]"]), 16)
    with pytest.raises(ConfigError, match="data.multiscale: 90x90 .* nearest valid size is 96x96"):
        check_training_sizes(load_config("quickstart", ["data.multiscale=[64,90]"]), 16)


def test_loss_outputs_must_exist_and_the_check_keeps_the_model_in_train_mode():
    cfg = load_config("quickstart", ["data.size=[32,32]", "loss.terms=[{loss: ce, output: aux/deep}]"])
    model = build_model("unet", 1, 7, features=[4, 4, 8, 8, 8, 4]).train()
    with pytest.raises(ConfigError, match=r"loss.terms\[0\] \(ce\): model unet has no output 'aux/deep'; available: logits"):
        check_loss_outputs(cfg, model)
    assert model.training
