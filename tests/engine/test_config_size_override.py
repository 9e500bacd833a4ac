"""An explicit ``data.size`` also scales the recipe's multi-scale training (issue 16 stumble 3)."""

from __future__ import annotations

import logging

from medseg.config import load_config


def test_size_override_scales_the_multiscale_list_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="medseg.config"):
        cfg = load_config("m2snet_polyp", ["data.size=[64,64]"])
    assert cfg.data.size == (64, 64)
    assert cfg.data.multiscale == [32, 64]  # 224..352 scaled by 64/352, multiples of M2SNet's stride 32
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "[224, 256, 288, 320, 352]" in lines[0] and "[32, 64]" in lines[0]


def test_size_override_keeps_an_explicit_multiscale_and_turns_off_a_collapsed_one(caplog):
    assert load_config("m2snet_polyp", ["data.size=[64,64]", "data.multiscale=[64]"]).data.multiscale == [64]
    assert load_config("m2snet_polyp", ["data.size=[160,160]"]).data.multiscale == [96, 128, 160]
    with caplog.at_level(logging.WARNING, logger="medseg.config"):
        cfg = load_config("m2snet_polyp", ["data.size=[32,32]"])  # every scaled size rounds to 32
    assert cfg.data.multiscale is None and "turned off" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medseg.config"):
        same = load_config("m2snet_polyp", ["preset=cpu", "data.size=[128,128]"])  # the preset's own size
    assert same.data.multiscale == [96, 128] and not caplog.records
