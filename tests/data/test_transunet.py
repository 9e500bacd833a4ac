"""TransUNet / SSL4MIS / CASCADE formats: real ACDC, tiny Synapse files, windowing, errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from medseg.config import DataConfig
from medseg.data.base import SliceDataset
from medseg.data.readers import build_reader
from medseg.data.transunet import ACDC_CLASSES, SYNAPSE_CLASSES, TransUNetReader, load_volume_file, volume_of
from medseg.utils import DataError


@pytest.fixture
def shared(shared_data):
    return shared_data


# -- real ACDC ------------------------------------------------------------------------------------


def test_acdc_slices_and_volumes(shared):
    r = build_reader(DataConfig(format="transunet", root=str(shared / "acdc"), num_classes=4))
    assert r.class_names == ACDC_CLASSES == ["background", "RV", "Myo", "LV"]
    train = r.ids("train_slices")
    assert r.ids("train") == train  # SSL4MIS: split "train" reads train_slices.list
    assert len(train) == 1312 and len(r.ids("val")) == 20 and len(r.ids("test")) == 40
    s = r.load(train[0])
    assert not s.is_volume and s.image.shape[0] == 1 and s.label.shape == s.image.shape[1:]
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0 and set(np.unique(s.label)) <= {0, 1, 2, 3}
    cid = r.ids("test")[0]
    d = r.num_slices(cid)
    v = r.load(cid)
    assert v.is_volume and v.image.shape[:2] == (1, d) and v.label.shape == v.image.shape[1:]
    assert v.image.dtype == np.float32 and v.label.dtype == np.int64
    assert 0.0 <= v.image.min() and v.image.max() <= 1.0 and set(np.unique(v.label)) <= {0, 1, 2, 3}
    one = r.load_slice(cid, 2)
    assert np.array_equal(one.image, v.image[:, 2]) and np.array_equal(one.label, v.label[2])
    # train.list names volumes that exist only as slices here: the error says so
    with pytest.raises(DataError, match=r"train\.list: unknown id .*try split 'train_slices'"):
        r.ids("train.list")


# -- tiny Synapse layout ----------------------------------------------------------------------------


HU = np.array([[-1000.0, -125.0, 0.0], [75.0, 275.0, 1000.0]], np.float32)


def _synapse(root: Path) -> Path:
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    (root / "lists" / "lists_Synapse").mkdir(parents=True)
    names = []
    for case in (5, 6, 7):
        for k in range(2):
            lab = np.zeros(HU.shape, np.float32)  # Synapse stores labels as float
            lab[0, k] = case + k
            name = f"case{case:04d}_slice{k:03d}"
            np.savez(root / "train_npz" / f"{name}.npz", image=HU.astype(np.int16), label=lab)
            names.append(name)
    vol = np.stack([HU, HU + 1, HU + 2])
    lab = np.zeros(vol.shape, np.uint8)
    lab[1, 0, 0] = 8
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as h:
        h["image"] = vol
        h["label"] = lab
    (root / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(names) + "\n")
    (root / "lists" / "lists_Synapse" / "test_vol.txt").write_text("case0001\n")
    return root


def test_synapse_reader_and_window(tmp_path):
    root = _synapse(tmp_path / "syn")
    r = TransUNetReader(root, num_classes=9, val_fraction=0.34)
    assert r.class_names == SYNAPSE_CLASSES and r.class_names[8] == "aorta"
    assert set(r.splits()) == {"train", "test_vol", "val"}
    train, val = r.ids("train"), r.ids("val")
    assert len(val) == 2 and {volume_of(v) for v in val} == {volume_of(val[0])}  # one whole case carved
    assert not set(train) & set(val) and len(train) == 4
    s = r.load("case0006_slice001")
    assert s.image.shape == (1, 2, 3) and np.array_equal(s.image[0], HU)  # raw HU unchanged
    assert s.label[0, 1] == 7 and s.label.dtype == np.int64
    assert r.ids("test") == ["case0001"]  # alias of test_vol
    v = r.load("case0001")
    assert v.image.shape == (1, 3, 2, 3) and v.label[1, 0, 0] == 8 and r.num_slices("case0001") == 3
    # raw HU -> window [-125, 275] -> (x + 125) / 400 clipped, through the dataset pipeline
    cfg = DataConfig(
        format="transunet",
        root=str(root),
        num_classes=9,
        size=(2, 3),
        normalize={"kind": "window", "window": (-125, 275)},
        augment={"preset": "none"},
    )
    ds = SliceDataset.from_config(build_reader(cfg), ["case0005_slice000", "case0001"], cfg, train=True)
    assert len(ds) == 4 and [ds.index[i][1] for i in range(4)] == [None, 0, 1, 2]
    expected = [[0.0, 0.0, 0.3125], [0.5, 1.0, 1.0]]
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(ds[2]["image"][0].numpy(), np.clip((HU + 1 + 125) / 400, 0, 1), atol=1e-6)
    assert ds[2]["case"] == "case0001" and ds[2]["slice"] == 1 and ds[2]["label"][0, 0] == 8
    # a single file outside the data set (medseg predict)
    one = load_volume_file(root / "test_vol_h5" / "case0001.npy.h5", num_classes=9)
    assert one.id == "case0001" and one.image.shape == (1, 3, 2, 3) and one.label[1, 0, 0] == 8
    with pytest.raises(DataError, match=r"case0001\.npy\.h5: label value 8 is outside 0\.\.3"):
        load_volume_file(root / "test_vol_h5" / "case0001.npy.h5", num_classes=4)


def test_cascade_img_key_and_errors(tmp_path):
    root = tmp_path / "c"
    (root / "train").mkdir(parents=True)
    np.savez(root / "train" / "case_a_slice1.npz", img=np.ones((4, 4), np.float32), label=np.zeros((4, 4)))
    np.savez(root / "train" / "bad_label.npz", img=np.ones((4, 4), np.float32), label=np.full((4, 4), 4.0))
    np.savez(root / "train" / "half.npz", img=np.ones((4, 4), np.float32), label=np.full((4, 4), 0.5))
    np.savez(root / "train" / "nokey.npz", picture=np.ones((4, 4), np.float32))
    (root / "train" / "broken.npz").write_bytes(b"garbage")
    (root / "train.txt").write_text("case_a_slice1.npz\nmissing_one\n")
    r = TransUNetReader(root, num_classes=4)
    assert r.load("case_a_slice1").image.shape == (1, 4, 4)
    with pytest.raises(DataError, match=r"bad_label\.npz: label value 4 is outside 0\.\.3"):
        r.load("bad_label")
    with pytest.raises(DataError, match=r"half\.npz: label map has non-integer values"):
        r.load("half")
    with pytest.raises(DataError, match=r"nokey\.npz: no 'image' \(or 'img'\) array; keys: picture"):
        r.load("nokey")
    with pytest.raises(DataError, match=r"broken\.npz: cannot read"):
        r.num_slices("broken")
    with pytest.raises(DataError, match=r"train\.txt: unknown id 'missing_one'"):
        r.ids("train")
    with pytest.raises(DataError, match=r"unknown split 'test'; available splits: train"):
        r.ids("test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: empty folder"):
        TransUNetReader(tmp_path / "empty")


def test_volume_slices_and_skip_empty(tmp_path):
    root = tmp_path / "acdc"
    (root / "data").mkdir(parents=True)
    img = np.linspace(0, 1, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    lab = np.zeros((5, 6, 7), np.uint8)
    lab[1, 2, 3] = 1
    lab[3, 0, 0] = 3
    with h5py.File(root / "data" / "patient001_frame01.h5", "w") as h:
        h.create_dataset("image", data=img, compression="gzip")
        h.create_dataset("label", data=lab, compression="gzip")
    (root / "test.list").write_text("patient001_frame01\n")
    r = TransUNetReader(root, num_classes=4)
    assert r.foreground_slices("patient001_frame01").tolist() == [False, True, False, True, False]
    for cache in (False, True):
        ds = SliceDataset(r, r.ids("test"), cache=cache)
        assert len(ds) == 5
        s = ds[3]
        assert s["image"].shape == (1, 6, 7) and s["label"].shape == (6, 7) and s["slice"] == 3
        np.testing.assert_array_equal(s["image"][0].numpy(), img[3])
        kept = SliceDataset(r, r.ids("test"), cache=cache, skip_empty_slices=True)
        assert [k for _, k in kept.index] == [1, 3] and kept[0]["label"][2, 3] == 1
