"""Transforms: resize modes, normalisation values, aligned augmentation, multi-scale collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.config import ConfigError, DataConfig, load_config
from medseg.data.base import SliceDataset
from medseg.data.samples import collate_samples
from medseg.data.transforms import (
    MultiScaleCollate,
    TransUNetAugmentd,
    build_transform_stages,
    build_transforms,
    resize_prediction,
)


def _labels(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A label map with blocks of classes 0..3 (large regions, so resizing keeps them)."""
    lab = np.zeros((h, w), np.int64)
    lab[5:20, 4:30] = 1
    lab[22:35, 10:44] = 2
    lab[8:14, 34:46] = 3
    return lab


def _sample(lab: np.ndarray, channels: int = 1) -> dict:
    img = np.repeat(lab[None].astype(np.float32), channels, axis=0)
    return {"image": img, "label": lab, "case": "x", "slice": None, "spacing": None}


def test_resize_modes_keep_label_values():
    lab = _labels()
    for preset in ("none", "transunet"):
        for size in ((24, 24), (64, 80), (33, 17)):
            cfg = DataConfig(size=size, augment={"preset": preset})
            out = build_transforms(cfg, train=False)(_sample(lab))
            assert out["image"].shape == (1, *size) and out["image"].dtype == torch.float32
            assert out["label"].shape == size and out["label"].dtype == torch.int64
            assert set(out["label"].unique().tolist()) <= {0, 1, 2, 3}
    # bilinear: a constant image stays constant, values stay within the input's range
    cfg = DataConfig(size=(16, 20), augment={"preset": "none"})
    out = build_transforms(cfg, train=False)({"image": np.full((1, 40, 48), 0.25, np.float32), "label": lab})
    np.testing.assert_allclose(out["image"].numpy(), 0.25, atol=1e-6)
    # transunet: scipy zoom order 3 (image) / 0 (label) exactly as TransUNet
    cfg = DataConfig(size=(20, 24), augment={"preset": "transunet"})
    img = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    out = build_transforms(cfg, train=False)({"image": img[None], "label": lab})
    np.testing.assert_allclose(out["image"][0].numpy(), ndimage.zoom(img, (0.5, 0.5), order=3), atol=1e-6)
    np.testing.assert_array_equal(out["label"].numpy(), ndimage.zoom(lab, (0.5, 0.5), order=0))


def test_normalisation_values():
    img = np.zeros((3, 2, 2), np.float32)
    img[:, 0, 0] = (0.5, 0.5, 0.5)
    img[:, 1, 1] = (1.0, 0.0, 0.2)
    cfg = DataConfig(in_channels=3, size=(2, 2), normalize={"kind": "imagenet"}, augment={"preset": "none"})
    out = build_transforms(cfg, train=False)({"image": img})["image"].numpy()
    np.testing.assert_allclose(
        out[:, 0, 0], [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225], rtol=1e-5
    )
    np.testing.assert_allclose(
        out[:, 1, 1], [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], rtol=1e-5
    )
    cfg = DataConfig(
        size=(2, 2), normalize={"kind": "imagenet", "mean": [0.5], "std": [0.25]}, augment={"preset": "none"}
    )
    out = build_transforms(cfg, train=False)({"image": np.array([[[0.0, 0.5], [0.75, 1.0]]], np.float32)})
    np.testing.assert_allclose(out["image"][0].numpy(), [[-2.0, 0.0], [1.0, 2.0]], atol=1e-6)
    hu = np.array([[[-1000.0, -125.0, 0.0], [75.0, 275.0, 3000.0]]], np.float32)
    cfg = DataConfig(
        size=(2, 3), normalize={"kind": "window", "window": (-125, 275)}, augment={"preset": "none"}
    )
    out = build_transforms(cfg, train=False)({"image": hu})["image"][0].numpy()
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.3125], [0.5, 1.0, 1.0]], atol=1e-6)
    cfg = DataConfig(size=(2, 2), normalize={"kind": "zscore"}, augment={"preset": "none"})
    out = build_transforms(cfg, train=False)({"image": np.array([[[1.0, 2.0], [3.0, 6.0]]], np.float32)})
    np.testing.assert_allclose(
        out["image"][0].numpy(), (np.array([[1, 2], [3, 6]]) - 3) / np.sqrt(3.5), rtol=1e-5
    )
    cfg = DataConfig(size=(2, 2), normalize={"kind": "unit"}, augment={"preset": "none"})
    assert build_transforms(cfg, train=False)({"image": hu[:, :, :2]})["image"][0, 0, 0] == -1000.0
    with pytest.raises(ConfigError, match="in_channels: 3"):
        build_transforms(DataConfig(in_channels=1, normalize={"kind": "imagenet"}), train=False)
    with pytest.raises(ConfigError, match="needs data.normalize.window"):
        build_transforms(DataConfig(normalize={"kind": "window"}), train=False)


def test_augmentation_keeps_alignment_and_is_seeded():
    lab = _labels(32, 32)
    cfg = DataConfig(
        size=(32, 32), augment={"preset": "basic", "flip": True, "vflip": True, "rot90": True, "prob": 0.5}
    )
    tf = build_transforms(cfg, train=True, seed=3)
    changed = 0
    for _ in range(12):  # flips and rot90 are exact: image == label after every draw
        out = tf(_sample(lab))
        np.testing.assert_array_equal(out["image"][0].numpy(), out["label"].numpy().astype(np.float32))
        changed += not np.array_equal(out["label"].numpy(), lab)
    assert changed > 0
    # rotation: image bilinear, label nearest -> they agree except on a thin border of each region
    cfg = DataConfig(size=(32, 32), augment={"preset": "basic", "flip": False, "rotate_deg": 25, "prob": 1.0})
    tf = build_transforms(cfg, train=True, seed=0)
    out = tf(_sample((lab > 0).astype(np.int64)))
    assert not np.array_equal(out["label"].numpy(), (lab > 0))
    agree = ((out["image"][0] > 0.5).long() == out["label"]).float().mean().item()
    assert agree > 0.97
    # same seed -> same draws; non-square size with rot90 is resized back
    a = [build_transforms(cfg, train=True, seed=7)(_sample(lab))["label"] for _ in range(2)]
    assert torch.equal(a[0], a[1])
    cfg = DataConfig(size=(24, 32), augment={"preset": "basic", "rot90": True, "prob": 1.0})
    assert build_transforms(cfg, train=True, seed=1)(_sample(_labels(24, 32)))["label"].shape == (24, 32)


def test_rotate_prob_rotates_every_sample():
    """augment.rotate_prob=1 (MSNet's RandomRotate) rotates every sample while flips keep prob 0.5; unset, the
    rotation keeps augment.prob (today's behaviour for the other recipes). Seeded, so the counts are fixed."""
    from monai.transforms import RandFlipd, RandRotated

    lab = (_labels(16, 16) > 0).astype(np.int64)

    def rotations(augment: dict, n: int = 8) -> tuple[int, int]:
        tf = build_transforms(DataConfig(size=(16, 16), augment={"preset": "basic", "rotate_deg": 10, **augment}),
                              train=True, seed=0)
        rot = next(t for t in tf.transforms if isinstance(t, RandRotated))
        flip = next(t for t in tf.transforms if isinstance(t, RandFlipd))
        done = flipped = 0
        for _ in range(n):
            tf(_sample(lab))
            done += bool(rot._do_transform)
            flipped += bool(flip._do_transform)
            if rot._do_transform:  # the angle drawn for this sample, uniform in +-10 degrees
                assert 0 < abs(rot.rand_rotate.x) <= np.radians(10)
        return done, flipped

    done, flipped = rotations({"rotate_prob": 1.0})
    assert done == 8 and 0 < flipped < 8  # every sample rotated; flips keep prob 0.5
    done, _ = rotations({})  # rotate_prob unset -> augment.prob = 0.5
    assert 0 < done < 8
    cfg = DataConfig(augment={"preset": "basic", "rotate_deg": 10, "prob": 0.5, "rotate_prob": 0.0})
    assert next(t for t in build_transforms(cfg, train=True).transforms if isinstance(t, RandRotated)).prob == 0.0
    # the recipes of the official MSNet/M2SNet loader rotate every sample, the others keep prob
    assert load_config("m2snet_polyp").data.augment.rotate_prob == 1.0
    assert load_config("msnet_polyp").data.augment.rotate_prob == 1.0
    assert load_config("unet_kvasir").data.augment.rotate_prob is None


def test_transunet_augmentation_matches_original():
    lab = _labels(32, 32)
    aug = TransUNetAugmentd(prob=0.5)
    aug.set_random_state(seed=0)
    ops = set()
    for _ in range(30):
        out = aug({"image": lab[None].astype(np.float32), "label": lab[None].astype(np.float32)})
        np.testing.assert_array_equal(out["image"], out["label"])  # nearest for both: exact alignment
        if aug._op == "rotate":
            assert -20 <= aug._angle < 20
            np.testing.assert_array_equal(
                out["label"][0], ndimage.rotate(lab.astype(np.float32), aug._angle, order=0, reshape=False)
            )
        elif aug._op == "rot_flip":
            np.testing.assert_array_equal(out["label"][0], np.flip(np.rot90(lab, aug._k), axis=aug._axis))
        ops.add(aug._op)
    assert ops == {None, "rotate", "rot_flip"}
    pre, post = build_transform_stages(DataConfig(size=(16, 16), augment={"preset": "transunet"}), train=True)
    assert len(pre.transforms) == 1 and len(post.transforms) == 2  # normalise (none: unit) | augment, zoom


def test_multiscale_collate_and_resize_prediction():
    lab = np.zeros((64, 64), np.int64)
    lab[:32, :32] = 1
    lab[32:, 40:] = 2
    batch = [
        {
            "image": torch.from_numpy(lab[None].astype(np.float32)),
            "label": torch.from_numpy(lab),
            "case": str(i),
            "slice": None,
            "spacing": None,
        }
        for i in range(3)
    ]
    collate = MultiScaleCollate([32, 48, (40, 56)], seed=0)
    seen = set()
    for _ in range(20):
        out = collate(batch)
        seen.add(collate.last_size)
        assert tuple(out["image"].shape) == (3, 1, *collate.last_size)
        assert tuple(out["label"].shape) == (3, *collate.last_size) and out["label"].dtype == torch.int64
        assert set(out["label"].unique().tolist()) <= {0, 1, 2} and out["case"] == ["0", "1", "2"]
        inside = out["image"][:, 0] == out["image"][:, 0].round()  # away from the bilinear edges
        assert torch.equal(out["image"][:, 0][inside].long(), out["label"][inside])
        assert inside.float().mean() > 0.8
    assert seen == {(32, 32), (48, 48), (40, 56)}
    a, b = MultiScaleCollate([32, 48, 64], seed=4), MultiScaleCollate([32, 48, 64], seed=4)
    assert [a.pick() for _ in range(10)] == [b.pick() for _ in range(10)]  # seeded
    # predictions back to the original size: bilinear on logits, nearest on label maps
    logits = torch.randn(2, 3, 8, 8)
    assert resize_prediction(logits, (20, 30)).shape == (2, 3, 20, 30)
    assert resize_prediction(logits[0], (20, 30)).shape == (3, 20, 30)
    np.testing.assert_allclose(resize_prediction(torch.full((1, 4, 4), 0.7), (9, 7)).numpy(), 0.7, atol=1e-6)
    labels = resize_prediction(torch.from_numpy(lab), (17, 23))
    assert (
        labels.shape == (17, 23)
        and labels.dtype == torch.int64
        and set(labels.unique().tolist()) == {0, 1, 2}
    )
    assert collate_samples(batch)["spacing"] == [None, None, None]


def test_dataset_determinism_with_workers(tmp_path):
    """Augmentations are reproducible with a seeded DataLoader and differ between workers."""
    from medseg.data.base import Case, Reader

    class Toy(Reader):
        def splits(self):
            return ["all"]

        def _split_ids(self, split):
            return [str(i) for i in range(8)] if split == "all" else None

        def load(self, case_id):
            lab = _labels(16, 16)
            return Case(case_id, lab[None].astype(np.float32), lab)

    cfg = DataConfig(size=(16, 16), augment={"preset": "transunet"})
    ds = SliceDataset.from_config(Toy(tmp_path), [str(i) for i in range(8)], cfg, train=True, seed=0)

    def run():
        g = torch.Generator().manual_seed(5)
        dl = torch.utils.data.DataLoader(
            ds,
            batch_size=2,
            num_workers=2,
            generator=g,
            collate_fn=collate_samples,
            multiprocessing_context="fork",
        )
        return torch.cat([b["label"] for b in dl])

    a, b = run(), run()
    assert torch.equal(a, b)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8))
