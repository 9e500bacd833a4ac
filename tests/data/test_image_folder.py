"""Image-folder and PraNet readers: real Kvasir-SEG / COVID-19 CT data and every error case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import DataConfig
from medseg.data.image_folder import ImageFolderReader, PraNetReader, read_image, read_mask
from medseg.data.readers import build_reader
from medseg.utils import DataError


@pytest.fixture
def shared(shared_data):
    return shared_data


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _folder(
    root: Path, n: int = 4, size: tuple[int, int] = (12, 10), mask_values=(0, 255), splits=None
) -> Path:
    """``n`` grey images + binary masks named c0..c{n-1}; optional ``splits`` {name: [ids]}."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / "images" / f"c{i}.png", rng.integers(0, 256, size, dtype=np.uint8))
        m = np.zeros(size, np.uint8)
        m[2:6, 3:7] = mask_values[1]
        _png(root / "masks" / f"c{i}.png", m)
    for name, ids in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root


# -- real data ------------------------------------------------------------------------------------


def test_kvasir_pranet_test(shared):
    root = shared / "kvasir-seg"
    r = ImageFolderReader(root, in_channels=3, train_split="pranet_train")
    ids = r.ids("pranet_test")
    assert len(ids) == 100
    assert r.ids("splits/pranet_test.txt") == ids == r.ids(str(root / "splits" / "pranet_test.txt"))
    for cid in ids[:3]:
        case = r.load(cid)
        assert case.image.dtype == np.float32 and case.image.shape[0] == 3 and not case.is_volume
        assert 0.0 <= case.image.min() and case.image.max() <= 1.0
        assert case.label.dtype == np.int64 and case.label.shape == case.image.shape[1:]
        assert set(np.unique(case.label)) == {0, 1}
        assert case.meta["orig_size"] == Image.open(case.meta["image_path"]).size[::-1]
    # val carved out of pranet_train (no val list): disjoint, 10 %
    train, val = r.ids("pranet_train"), r.ids("val")
    assert len(val) == 90 and len(train) == 810 and not set(train) & set(val)
    assert "val" in r.splits()


def test_covid_binary_and_multiclass(shared):
    root = shared / "covid19-ct-semiseg"
    binary = build_reader(DataConfig(root=str(root), num_classes=2, in_channels=1))
    ids = binary.ids("test")[:2]
    assert len(binary.ids("test")) == 48
    for cid in ids:
        c = binary.load(cid)
        assert (
            c.image.shape[0] == 1 and set(np.unique(c.label)) <= {0, 1} and c.label.shape == c.image.shape[1:]
        )
    multi = build_reader(
        DataConfig(root=str(root), mask_dir="masks_multiclass", num_classes=3, in_channels=3)
    )
    seen: set[int] = set()
    for cid in multi.ids("train")[:3]:
        c = multi.load(cid)
        assert c.image.shape[0] == 3 and np.array_equal(c.image[0], c.image[2])  # grey repeated
        seen |= set(np.unique(c.label).tolist())
    assert seen <= {0, 1, 2} and 2 in seen
    # a 3-class label-index mask read as binary is refused, naming the file
    with pytest.raises(DataError, match=r"masks_multiclass/0\.png"):
        ImageFolderReader(root, mask_dir="masks_multiclass", num_classes=2).load("0")


# -- decoding rules ---------------------------------------------------------------------------------


def test_channel_conversion_and_mask_rules(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    p = _png(tmp_path / "rgb.png", rgb)
    grey = read_image(p, 1)
    assert grey.shape == (1, 2, 2)
    assert grey[0, 0, 0] == pytest.approx(0.299, abs=1e-6) and grey[0, 0, 1] == pytest.approx(0.587, abs=1e-6)
    g = _png(tmp_path / "grey.png", np.array([[0, 51], [102, 255]], np.uint8))
    out = read_image(g, 3)
    assert out.shape == (3, 2, 2) and np.allclose(out[1], [[0, 0.2], [0.4, 1.0]])
    # {0, 1} masks are binary as they are; {0, 255} thresholded at 128 on any channel
    assert read_mask(_png(tmp_path / "m01.png", np.array([[0, 1], [1, 0]], np.uint8)), 2).tolist() == [
        [0, 1],
        [1, 0],
    ]
    m = np.zeros((2, 2, 3), np.uint8)
    m[0, 0, 2] = 200  # only the blue channel is on
    m[1, 1] = 127
    assert read_mask(_png(tmp_path / "mrgb.png", m), 2).tolist() == [[1, 0], [0, 0]]
    # JPEG mask: compression noise around the edges never flips the threshold
    big = np.zeros((32, 32), np.uint8)
    big[8:24, 8:24] = 255
    Image.fromarray(big).save(tmp_path / "m.jpg", quality=75)
    assert np.array_equal(read_mask(tmp_path / "m.jpg", 2), (big > 0).astype(np.int64))


def test_seeded_split_without_lists(tmp_path):
    root = _folder(tmp_path / "d", n=10)
    r = ImageFolderReader(root)
    parts = {s: r.ids(s) for s in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [7, 1, 2]
    assert sorted(sum(parts.values(), [])) == sorted(r.ids("all"))
    assert ImageFolderReader(root).ids("test") == parts["test"]  # deterministic


def test_split_list_with_extensions_and_carving(tmp_path):
    root = _folder(tmp_path / "d", n=6, splits={"train": ["c0.png", "c1", "c2", "c3", "c4"], "test": ["c5"]})
    r = ImageFolderReader(root, val_fraction=0.2)
    train, val = r.ids("train"), r.ids("val")
    assert len(val) == 1 and len(train) == 4 and set(train + val) == {f"c{i}" for i in range(5)}
    assert r.ids("test") == ["c5"] and r.splits() == ["test", "train", "val", "all"]
    assert ImageFolderReader(root, val_split=None).ids("train") == [f"c{i}" for i in range(5)]


def test_pranet_layout(tmp_path):
    root = tmp_path / "polyp"
    _folder(root / "TrainDataset", n=5, size=(8, 8))
    _folder(root / "TestDataset" / "CVC-300", n=2, size=(8, 8))
    _folder(root / "TestDataset" / "Kvasir", n=3, size=(8, 8))
    r = build_reader(DataConfig(format="pranet", root=str(root), val_fraction=0.2))
    assert isinstance(r, PraNetReader)
    assert r.ids("CVC-300") == ["CVC-300/c0", "CVC-300/c1"]
    assert r.ids("Kvasir") == ["Kvasir/c0", "Kvasir/c1", "Kvasir/c2"]
    assert r.ids("test") == r.ids("CVC-300") + r.ids("Kvasir")
    assert len(r.ids("train")) == 4 and len(r.ids("val")) == 1
    case = r.load("Kvasir/c1")
    assert case.meta["image_path"].endswith("TestDataset/Kvasir/images/c1.png") and case.label.max() == 1


# -- errors: each names the file --------------------------------------------------------------------


def test_unreadable_image(tmp_path):
    root = _folder(tmp_path / "d", n=2)
    (root / "images" / "c1.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"images/c1\.png: cannot read image"):
        ImageFolderReader(root).load("c1")


def test_missing_mask(tmp_path):
    root = _folder(tmp_path / "d", n=3)
    (root / "masks" / "c2.png").unlink()
    r = ImageFolderReader(root)
    with pytest.raises(DataError, match=r"images/c2\.png: missing mask"):
        r.ids("all")
    with pytest.raises(DataError, match=r"images/c2\.png: missing mask"):
        r.load("c2")
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()
    with pytest.raises(DataError, match=r"d: no masks/ folder"):
        ImageFolderReader(root)
    assert ImageFolderReader(root, require_masks=False).load("c0").label is None  # images-only (prediction)


def test_size_mismatch(tmp_path):
    root = _folder(tmp_path / "d", n=2, size=(12, 10))
    _png(root / "masks" / "c1.png", np.zeros((11, 10), np.uint8))
    with pytest.raises(
        DataError, match=r"masks/c1\.png: mask size 10x11 differs from image .*images/c1\.png size 10x12"
    ):
        ImageFolderReader(root).load("c1")


def test_label_out_of_range(tmp_path):
    root = _folder(tmp_path / "d", n=2, mask_values=(0, 2))
    _png(root / "masks" / "c1.png", np.full((12, 10), 5, np.uint8))
    r = ImageFolderReader(root, num_classes=3)
    assert set(np.unique(r.load("c0").label)) == {0, 2}
    with pytest.raises(
        DataError, match=r"masks/c1\.png: label value 5 is outside 0\.\.2 \(data\.num_classes = 3\)"
    ):
        r.load("c1")


def test_empty_folder(tmp_path):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    (tmp_path / "d" / "images" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"d/images: empty folder"):
        ImageFolderReader(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match=r"e: no images/ folder"):
        ImageFolderReader(tmp_path / "e")


def test_unknown_split_id_and_unknown_split(tmp_path):
    root = _folder(tmp_path / "d", n=2, splits={"train": ["c0", "c9"], "test": ["c1"]})
    r = ImageFolderReader(root)
    with pytest.raises(DataError, match=r"splits/train\.txt: unknown id 'c9': no image for it in .*images"):
        r.ids("train")
    with pytest.raises(DataError, match=r"unknown split 'tset'; available splits: test, train, val, all"):
        r.ids("tset")
