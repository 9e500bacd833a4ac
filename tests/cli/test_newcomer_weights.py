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
