"""Tiny built-in data and tiny trained runs shared by the CLI and engine tests (module-scoped fixtures call these)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medseg.cli import app

#: A U-Net that learns the liver in the few steps of two tiny epochs.
TINY_UNET = [
    "data.size=[64,64]",
    "data.batch_size=8",
    "model.name=unet",
    "model.kwargs={features: [4, 8, 8, 16, 16, 4]}",
    "loss.terms=[{loss: dice_ce, output: logits, kwargs: {ce_weight: 0.5, dice_weight: 0.5}}]",
    "trainer.max_epochs=2",
    "trainer.max_time_s=null",
    "trainer.progress=false",
    "trainer.overlays=0",
]


def make_ct(tmp_path_factory, count: int = 24, seed: int = 3) -> Path:
    """``medseg data builtin phantom-ct`` with ``count`` slices."""
    out = tmp_path_factory.mktemp("data") / "ct"
    res = CliRunner().invoke(app, ["data", "builtin", "phantom-ct", "--out", str(out), "--seed", str(seed),
                                   "--count", str(count)])
    assert res.exit_code == 0, res.output
    return out


def train_tiny(data: Path, tmp_path_factory, sets: list[str] = TINY_UNET, name: str = "qs") -> Path:
    """``medseg train --data DATA`` with ``--set`` for each of ``sets``; returns the run folder."""
    out = tmp_path_factory.mktemp("runs") / name
    args = ["train", "--data", str(data), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out
