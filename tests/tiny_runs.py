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


#: Widths that make the registry's U-Net tiny (a few thousand parameters).
TINY_UNET_WIDTHS = "model.kwargs={features: [4, 8, 8, 16, 16, 4]}"
#: Settings that make any run a one-epoch smoke run without bars or overlays.
ONE_EPOCH = ["trainer.max_epochs=1", "trainer.max_time_s=null", "trainer.progress=false", "trainer.overlays=0"]


def make_grey_classes(root: Path, count: int = 12, size: int = 32, seed: int = 0) -> Path:
    """A greyscale 3-class image folder: ``images/c<i>.png`` (8-bit grey) and ``masks/c<i>.png`` holding the
    class indices 0, 1, 2 (a square of class 1, a rectangle of class 2, brighter than the background)."""
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        lab = np.zeros((size, size), np.uint8)
        o = int(rng.integers(0, size // 8))
        lab[o + size // 8 : o + size // 2, o + size // 8 : o + size // 2] = 1
        lab[size // 2 + 2 : size - 4, size // 2 : size - 2] = 2
        img = 40 + 80 * (lab == 1) + 160 * (lab == 2) + rng.normal(0, 8, lab.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(lab).save(root / "masks" / f"c{i:02d}.png")
    return root
