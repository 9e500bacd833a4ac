"""A run written before a model default changed still loads (issue 14 changed SNet's ViT strides and
UNet++'s widths); new checkpoints store every model keyword, so later default changes cannot touch them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config import load_config
from medseg.engine.checkpoint import medseg_metadata
from medseg.engine.predict import model_from_checkpoint
from medseg.models import build_model, legacy_kwargs, resolved_kwargs
from medseg.utils import MedsegError


def _old_checkpoint(name: str, stored: dict, built_with: dict, out_channels: int = 2) -> tuple[dict, torch.nn.Module]:
    """A checkpoint as an earlier medseg wrote it: only ``stored`` kwargs, weights of the ``built_with`` model."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, out_channels=out_channels, **built_with).eval()
    cfg = load_config("quickstart", [f"model.name={name}"]).to_dict()
    meta = {"model": name, "model_kwargs": stored, "in_channels": 1, "out_channels": out_channels, "config": cfg}
    return {"medseg": meta, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, model


@pytest.mark.parametrize(
    ("name", "stored", "old_default"),
    [
        ("snet", {"cnn_channels": [8, 8, 16, 16, 32], "vit_dims": [8, 16, 16, 32]}, {"vit_strides": (4, 8, 16, 32)}),
        ("unetpp", {}, {"features": (32, 32, 64, 128, 256, 32)}),
    ],
)
def test_checkpoint_from_before_a_default_changed_loads_with_the_old_default(name, stored, old_default):
    ckpt, old = _old_checkpoint(name, stored, stored | old_default)
    model, _ = model_from_checkpoint(ckpt, Path("old.ckpt"))
    assert model.medseg_legacy_kwargs == {**old_default, **stored}
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, old(x).logits)


def test_weights_that_fit_no_version_are_still_one_error():
    ckpt, _ = _old_checkpoint("unetpp", {}, {"features": (8, 8, 16, 16, 32, 8)})
    with pytest.raises(MedsegError, match="old.ckpt: the weights do not fit the stored model 'unetpp'"):
        model_from_checkpoint(ckpt, Path("old.ckpt"))


def test_legacy_kwargs_keep_what_the_run_gave():
    assert legacy_kwargs("snet", {"vit_strides": [2, 4, 8, 16]}) == []  # given: nothing to guess
    assert legacy_kwargs("snet", {"fusion": "unstagger"}) == [{"vit_strides": (4, 8, 16, 32), "fusion": "unstagger"}]
    assert legacy_kwargs("unet", {}) == []


def test_new_checkpoints_store_every_keyword():
    kw = medseg_metadata(load_config("quickstart"))["model_kwargs"]
    assert kw["vit_strides"] == [4, 8, 16, 32] and kw["fusion"] == "stagger" and kw["cnn_channels"] == [16, 16, 32, 64, 128]
    # a builder's own default wins over its class's (msnet's unit "su" is not MSNet's default)
    assert resolved_kwargs("msnet", {})["unit"] == "su" and resolved_kwargs("m2snet", {})["unit"] == "msu"
    assert resolved_kwargs("unet", {"dropout": 0.1}) == {"features": [64, 128, 256, 512, 1024, 64], "norm": "batch",
                                                         "dropout": 0.1}
