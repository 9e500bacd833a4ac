"""Data settings derived from an image folder for the ``unet`` recipe's ``auto`` values (medseg.data.derive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import ModelConfig, load_config
from medseg.data.derive import derive_data_settings
from medseg.utils import DataError


def _folder(root: Path, images: list[np.ndarray], masks: list[np.ndarray], splits: dict[str, list[int]] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (im, m) in enumerate(zip(images, masks)):
        Image.fromarray(im).save(root / "images" / f"im{i}.png")
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    if splits:
        (root / "splits").mkdir()
        for name, idx in splits.items():
            (root / "splits" / f"{name}.txt").write_text("".join(f"im{i}\n" for i in idx))
    return root


def _derive(root: Path, sets: list[str] | None = None, pretrained: bool = False):
    cfg = load_config("unet", [f"data.root={root}", *(sets or [])])
    return derive_data_settings(cfg.data, ModelConfig(name="unet", kwargs={"pretrained": True} if pretrained else {}))


def test_rgb_binary_0_255_with_pranet_split_lists(tmp_path):
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 255, (44, 60, 3), dtype=np.uint8) for _ in range(6)]
    masks = [np.where(rng.random((44, 60)) > 0.5, 255, 0).astype(np.uint8) for _ in range(6)]
    root = _folder(tmp_path / "polyps", rgb, masks, {"pranet_train": [0, 1, 2, 3], "pranet_test": [4, 5]})
    d = _derive(root)
    assert (d.in_channels, d.num_classes, d.normalize.kind) == (3, 2, "zscore")
    # 44x60 with the U-Net's stride 16: 44/16 = 2.75 -> 3 strides = 48, 60/16 = 3.75 -> 4 strides = 64
    assert d.size == (48, 64)
    assert (d.train_split, d.val_split, d.test_split) == ("pranet_train", "val", "pranet_test")
    assert "binary masks (0/255)" in d.derived and "(lists pranet_train (val carved from it)/pranet_test)" in d.derived
    # val carved from the 4 training ids: round(0.1 * 4) = 0 -> at least 1; 3 / 1 / 2 images
    assert d.derived.endswith("= 3/1/2 images")
    assert _derive(root, pretrained=True).normalize.kind == "imagenet"  # RGB into a pretrained backbone


def test_grey_stored_as_rgb_is_grey_and_large_images_are_scaled_to_256(tmp_path):
    grey = np.full((600, 800), 90, np.uint8)
    masks = [np.zeros((600, 800), np.uint8) for _ in range(3)]
    masks[1][10:20, 10:20] = 1
    root = _folder(tmp_path / "big", [np.stack([grey] * 3, -1)] * 3, masks)
    d = _derive(root)
    # 600x800 x 256/800 = 192x256, multiples of 16
    assert (d.in_channels, d.num_classes, d.size) == (1, 2, (192, 256))
    assert "binary masks (0/1)" in d.derived and "scaled to at most 256" in d.derived


def test_explicit_values_are_kept_and_ambiguous_masks_are_refused(tmp_path):
    im = [np.zeros((32, 32), np.uint8)] * 3
    masks = [np.zeros((32, 32), np.uint8) for _ in range(3)]
    masks[0][:8] = 128
    masks[1][:8] = 255
    root = _folder(tmp_path / "odd", im, masks)
    with pytest.raises(DataError, match=r"masks hold values 0, 128, 255: neither binary .* set data.num_classes"):
        _derive(root)
    d = _derive(root, ["data.num_classes=2", "data.size=[64,64]", "data.normalize.kind=unit"])
    assert (d.num_classes, d.size, d.normalize.kind, d.in_channels) == (2, (64, 64), "unit", 1)
    assert "num_classes" not in d.derived and "size" not in d.derived and "in_channels 1" in d.derived


def test_class_indices_with_a_gap_and_other_formats(tmp_path):
    masks = [np.zeros((16, 16), np.uint8) for _ in range(2)]
    masks[0][:4] = 3
    masks[1][:4] = 1
    root = _folder(tmp_path / "gap", [np.zeros((16, 16), np.uint8)] * 2, masks)
    d = _derive(root)
    assert d.num_classes == 4 and "mask values 0..3; no pixel of class 2" in d.derived
    with pytest.raises(DataError, match="auto is derived only for 2D image folders"):
        _derive(root, ["data.format=nnunet_raw"])


def test_the_polyp_protocol_on_a_multi_class_task_is_refused_before_training():
    """The third stumble of the old README example (unet_kvasir on 3 classes) now stops at the config, not after training."""
    from medseg.config import ConfigError

    with pytest.raises(ConfigError, match="polyp protocol is binary .* data.num_classes is 3: use eval.protocol=image"):
        load_config("unet_kvasir", ["data.num_classes=3"])
    assert load_config("unet_kvasir", ["data.num_classes=3", "eval.protocol=image"]).eval.protocol == "image"
