"""``eval.inferer: sliding_window``: MONAI's SlidingWindowInferer in the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import validate
from medseg.engine.predict import Predictor
from medseg.models import build_model

SIZE = 32


def predictor(inferer: str, overlap: float = 0.5) -> Predictor:
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=3, features=[4, 8, 8, 16, 16, 4])
    cfg = validate({"data": {"size": [SIZE, SIZE], "num_classes": 3, "in_channels": 1},
                    "eval": {"inferer": inferer, "sw_overlap": overlap, "fast": False}})
    return Predictor(model, cfg, fast=False)


def test_sliding_window_equals_whole_image_when_the_window_covers_the_image():
    image = np.random.default_rng(0).random((1, SIZE, SIZE), dtype=np.float32)
    (lw, pw), = predictor("whole").predict_images([image])
    (ls, ps), = predictor("sliding_window").predict_images([image])
    np.testing.assert_allclose(ps, pw, atol=1e-5)
    assert np.array_equal(ls, lw)


def test_larger_images_keep_their_size_and_windows_tile_the_logits():
    """No overlap: every pixel's logits are those of the one window holding it (stitched, not squashed)."""
    sw = predictor("sliding_window", overlap=0.0)
    x = torch.randn(2, 1, 2 * SIZE, 3 * SIZE)
    out = sw.logits(x)
    assert out.shape == (2, 3, 2 * SIZE, 3 * SIZE)
    tile = sw.logits(x[:, :, SIZE:, 2 * SIZE :], whole=True)
    torch.testing.assert_close(out[:, :, SIZE:, 2 * SIZE :], tile, atol=1e-5, rtol=1e-5)
    images = [np.random.default_rng(i).random((1, 40 + i, 70), dtype=np.float32) for i in range(3)]
    res = predictor("sliding_window").predict_images(images)
    assert [r[0].shape for r in res] == [(40, 70), (41, 70), (42, 70)]
    assert all(r[1].shape == (3, *r[0].shape) and np.allclose(r[1].sum(0), 1, atol=1e-5) for r in res)


def test_sliding_window_config_is_checked():
    with pytest.raises(Exception, match="sw_overlap"):
        validate({"eval": {"sw_overlap": 1.0}})
    with pytest.raises(Exception, match="inferer"):
        validate({"eval": {"inferer": "tiles"}})
