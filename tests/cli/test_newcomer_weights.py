"""Pretrained weights offline and from a local file (issue 16 stumble 2, issue 18 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def endo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "endo"
    res = runner.invoke(app, ["data", "builtin", "phantom-endo", "--out", str(out), "--count", "8"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        ([], ["timm/res2net50d.in1k", "model.kwargs.pretrained=/path/to/the/file", "--set preset=offline"]),
        (["--set", "model.kwargs.pretrained=null"], ["vgg16-397923af.pth", "kwargs.weights=", "--set preset=offline"]),
    ],
)
def test_offline_pretrained_recipe_fails_in_one_line_exit_2(endo_data, tmp_path, extra, needles):
    """No internet (the tests refuse every download): one line naming the file, the key and the preset."""
    res = runner.invoke(app, ["train", "--recipe", "m2snet_polyp", "--data", str(endo_data), "--out", str(tmp_path / "r"),
                              "--set", "data.train_split=train", "--set", "data.test_split=test", *extra])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    text = " ".join(res.output.split())
    for needle in needles:
        assert needle in text, (needle, text)
    assert not (tmp_path / "r").exists()


def test_recipe_pretrained_key_loads_a_local_imagenet_file(tmp_path):
    """``model.kwargs.pretrained=/path`` (the key the offline error names) loads a local file, every tensor.

    The file is a randomly initialised timm ``res2net50d`` saved in the official Res2Net-50-v1b layout
    (plain names, 1000-class ``fc`` included), as an ImageNet checkpoint would be.
    """
    import timm
    import torch

    from medseg.config import load_config
    from medseg.engine.task import SegTask

    source = timm.create_model("res2net50d", pretrained=False).state_dict()
    path = tmp_path / "res2net50_v1b_26w_4s.pth"
    torch.save(source, path)
    cfg = load_config("m2snet_polyp", ["preset=offline", f"model.kwargs.pretrained={path}"])
    assert cfg.model.kwargs["pretrained"] == str(path)
    got = SegTask(cfg).model.backbone.model.state_dict()
    assert len(got) == len(source) - 2  # all but fc.weight, fc.bias
    assert all(torch.equal(v, source[k]) for k, v in got.items())
