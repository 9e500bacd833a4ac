"""Built-in synthetic data: determinism, content statistics, on-disk layout, caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt

from medseg.data import builtin
from medseg.data.builtin import (
    BUILTIN_DATASETS,
    PHANTOM_CT_CLASSES,
    generate,
    phantom_ct_slice,
    phantom_ct_volume,
    phantom_endo_image,
)

SMALL = {"count": 12, "size": 64}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _read_split(folder: Path) -> dict[str, list[str]]:
    return {k: (folder / f"{k}.txt").read_text().split() for k in ("train", "val", "test")}


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("phantom-ct", tmp_path_factory.mktemp("ct") / "phantom-ct", seed=0, volumes=3, **SMALL)


@pytest.fixture(scope="module")
def ct_slices() -> list[tuple[np.ndarray, np.ndarray]]:
    return [phantom_ct_slice(_rng(0, i), 128) for i in range(60)]


# ---------------------------------------------------------------------------------------- API
def test_registry_and_classes() -> None:
    assert set(BUILTIN_DATASETS) == {"phantom-ct", "phantom-endo"}
    assert PHANTOM_CT_CLASSES[0] == "background"
    assert len(PHANTOM_CT_CLASSES) == 7


def test_unknown_name_raises_value_error_listing_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="phantom-ct.*phantom-endo"):
        generate("phantom-mri", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate("phantom-endo", tmp_path / "e", count=2, size=32, volumes=2)
    with pytest.raises(ValueError):
        generate("phantom-ct", tmp_path / "c", count=0)


# ----------------------------------------------------------------------------- determinism
def test_slice_and_volume_are_deterministic_by_seed() -> None:
    a_hu, a_lab = phantom_ct_slice(_rng(3), 64)
    b_hu, b_lab = phantom_ct_slice(_rng(3), 64)
    assert np.array_equal(a_hu, b_hu) and np.array_equal(a_lab, b_lab)
    c_hu, _ = phantom_ct_slice(_rng(4), 64)
    assert not np.array_equal(a_hu, c_hu)

    v1 = phantom_ct_volume(_rng(5), (8, 32, 32))
    v2 = phantom_ct_volume(_rng(5), (8, 32, 32))
    assert all(np.array_equal(x, y) for x, y in zip(v1[:2], v2[:2], strict=True)) and v1[2] == v2[2]

    e1, m1 = phantom_endo_image(_rng(6), 48)
    e2, m2 = phantom_endo_image(_rng(6), 48)
    assert np.array_equal(e1, e2) and np.array_equal(m1, m2)
    assert not np.array_equal(e1, phantom_endo_image(_rng(7), 48)[0])


def test_generate_is_byte_identical_for_a_seed_and_distinct_across_seeds(
    ct_dir: Path, tmp_path: Path
) -> None:
    again = generate("phantom-ct", tmp_path / "again", seed=0, volumes=3, **SMALL)
    assert _files(again) == _files(ct_dir)
    other = generate("phantom-ct", tmp_path / "other", seed=1, volumes=3, **SMALL)
    h0 = {_digest(p) for p in ct_dir.rglob("*_0000.nii.gz")} | {
        _digest(p) for p in (ct_dir / "images").iterdir()
    }
    h1 = {_digest(p) for p in other.rglob("*_0000.nii.gz")} | {
        _digest(p) for p in (other / "images").iterdir()
    }
    assert len(h0) == 12 + 3 and not h0 & h1


def test_endo_is_byte_identical_and_distinct_across_seeds(tmp_path: Path) -> None:
    a = generate("phantom-endo", tmp_path / "a", seed=2, count=6, size=48)
    b = generate("phantom-endo", tmp_path / "b", seed=2, count=6, size=48)
    c = generate("phantom-endo", tmp_path / "c", seed=3, count=6, size=48)
    assert _files(a) == _files(b)
    ha = {_digest(p) for p in (a / "images").iterdir()}
    hc = {_digest(p) for p in (c / "images").iterdir()}
    assert len(ha) == 6 and not ha & hc


# ---------------------------------------------------------------------------- CT statistics
def test_ct_slice_arrays(ct_slices: list[tuple[np.ndarray, np.ndarray]]) -> None:
    hu, lab = ct_slices[0]
    assert hu.shape == lab.shape == (128, 128)
    assert hu.dtype == np.float32 and lab.dtype == np.uint8
    assert hu.min() < -900  # air outside the body
    assert hu.max() > 300  # bone
    assert int(lab.max()) <= 6


def test_ct_structures_presence_and_sizes(ct_slices: list[tuple[np.ndarray, np.ndarray]]) -> None:
    labs = np.stack([lab for _, lab in ct_slices])
    areas = np.stack([(labs == k).sum((1, 2)) for k in range(7)], 1)  # [N, 7]
    present = areas > 0
    assert present[:, 1:].any(0).all(), "every structure appears somewhere in the set"

    def mean_area(k: int) -> float:
        return float(areas[present[:, k], k].mean())

    liver, spleen, kidney, gb, lesion = (mean_area(k) for k in (1, 2, 3, 4, 5))
    assert liver > 2.5 * max(spleen, kidney)  # large > medium
    assert min(spleen, kidney) > 2.5 * max(gb, lesion)  # medium > small
    for k in (4, 5, 6):  # small / thin structures are often absent
        assert 0.1 < present[:, k].mean() < 0.8
    # sizes vary from slice to slice
    assert areas[present[:, 1], 1].std() > 0.2 * liver


def test_ct_vessel_is_thin(ct_slices: list[tuple[np.ndarray, np.ndarray]]) -> None:
    widths, liver_widths = [], []
    for _, lab in ct_slices:
        for k, out in ((6, widths), (1, liver_widths)):
            m = lab == k
            if m.sum() > 20:
                out.append(2 * distance_transform_edt(m).max() - 1)  # ~ width in pixels
    assert widths and np.mean(widths) <= 4.0
    assert np.mean(liver_widths) > 20


def test_ct_volume_is_coherent_along_z() -> None:
    hu, lab, spacing = phantom_ct_volume(_rng(11), (32, 64, 64))
    assert hu.shape == lab.shape == (32, 64, 64) and hu.dtype == np.float32 and lab.dtype == np.uint8
    assert spacing == (5.0, 360 / 64, 360 / 64)  # (z, y, x) mm, anisotropic
    assert set(np.unique(lab)) <= set(range(7)) and {1, 3} <= set(np.unique(lab))
    # organs appear / disappear: the liver (cranial) and kidney (caudal) z-extents are partial
    for k in (1, 3):
        z = np.flatnonzero((lab == k).any((1, 2)))
        assert 0 < len(z) < 32 and np.array_equal(z, np.arange(z[0], z[-1] + 1)), "one contiguous extent"
    # index 0 is caudal: kidneys end lower than the liver
    assert np.flatnonzero((lab == 3).any((1, 2)))[0] < np.flatnonzero((lab == 1).any((1, 2)))[0]
    # neighbouring slices are much more alike than distant ones
    liver = (lab == 1).reshape(32, -1).astype(float)
    zs = [z for z in range(31) if liver[z].any() and liver[z + 1].any()]
    dice = [2 * (liver[z] * liver[z + 1]).sum() / (liver[z].sum() + liver[z + 1].sum()) for z in zs]
    assert np.median(dice) > 0.8


# ------------------------------------------------------------------------------ disk layout
def test_ct_2d_layout(ct_dir: Path) -> None:
    images = sorted((ct_dir / "images").glob("*.png"))
    masks = sorted((ct_dir / "masks").glob("*.png"))
    assert len(images) == 12 and [p.stem for p in images] == [p.stem for p in masks]
    seen = set()
    for ip, mp in zip(images, masks, strict=True):
        im, mk = Image.open(ip), Image.open(mp)
        assert im.mode == "L" and mk.mode == "L" and im.size == mk.size == (64, 64)
        arr = np.asarray(mk)
        assert arr.max() <= 6
        seen |= set(np.unique(arr).tolist())
        assert np.asarray(im).max() > 200 and np.asarray(im).min() == 0  # windowed CT: air black, bone white
    assert 1 in seen
    splits = _read_split(ct_dir / "splits")
    ids = [i for v in splits.values() for i in v]
    assert sorted(ids) == [p.stem for p in images] and len(set(ids)) == len(ids)
    assert len(splits["train"]) > len(splits["val"]) > 0 and len(splits["test"]) > 0


def test_ct_window() -> None:
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 1000.0]])
    out = builtin.window_ct(hu)
    assert out.dtype == np.uint8 and out[0, [0, 1, 3, 4]].tolist() == [0, 0, 255, 255]
    assert abs(int(out[0, 2]) - 127.5) < 1  # level 40, width 400


def test_ct_volumes_nnunet_layout(ct_dir: Path) -> None:
    vroot = ct_dir / "volumes"
    ds = json.loads((vroot / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"}
    assert ds["labels"] == {name: i for i, name in enumerate(PHANTOM_CT_CLASSES)}
    assert ds["file_ending"] == ".nii.gz"
    tr = sorted(p.name[: -len("_0000.nii.gz")] for p in (vroot / "imagesTr").glob("*_0000.nii.gz"))
    ts = sorted(p.name[: -len("_0000.nii.gz")] for p in (vroot / "imagesTs").glob("*_0000.nii.gz"))
    assert ds["numTraining"] == len(tr) and len(tr) + len(ts) == 3 and ts
    assert sorted(p.name[: -len(".nii.gz")] for p in (vroot / "labelsTr").glob("*.nii.gz")) == tr
    assert sorted(p.name[: -len(".nii.gz")] for p in (vroot / "labelsTs").glob("*.nii.gz")) == ts
    splits = _read_split(vroot / "splits")
    assert sorted(splits["train"] + splits["val"]) == tr and splits["test"] == ts
    for cid, folder in [(c, "Tr") for c in tr] + [(c, "Ts") for c in ts]:
        img = nib.load(vroot / f"images{folder}" / f"{cid}_0000.nii.gz")
        lab = nib.load(vroot / f"labels{folder}" / f"{cid}.nii.gz")
        assert img.shape == lab.shape == (64, 64, 32)
        assert np.allclose(img.affine, lab.affine)
        zooms = img.header.get_zooms()
        assert np.allclose(zooms, (360 / 64, 360 / 64, 5.0))
        assert np.allclose(np.abs(np.diag(img.affine)[:3]), zooms)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        data = np.asanyarray(img.dataobj)
        assert data.min() < -900 and data.max() > 300
        values = set(np.unique(np.asanyarray(lab.dataobj)).tolist())
        assert values <= set(range(7)) and 1 in values


def test_volume_file_round_trips_to_phantom_ct_volume(ct_dir: Path) -> None:
    hu, lab, spacing = phantom_ct_volume(builtin._case_rng(0, "phantom-ct-volume", 0), (32, 64, 64))
    vroot = ct_dir / "volumes"
    sub = "Ts" if "phantom_000" in _read_split(vroot / "splits")["test"] else "Tr"
    img = nib.load(vroot / f"images{sub}" / "phantom_000_0000.nii.gz")
    lbl = nib.load(vroot / f"labels{sub}" / "phantom_000.nii.gz")
    assert np.array_equal(np.asanyarray(lbl.dataobj).transpose(2, 1, 0), lab)
    assert np.abs(img.get_fdata().transpose(2, 1, 0) - np.clip(hu, -1024, 3071)).max() <= 0.5 + 1e-3
    assert np.allclose(img.header.get_zooms()[::-1], spacing)


# ---------------------------------------------------------------------------------- endo
def test_endo_image_content() -> None:
    fracs = []
    for i in range(24):
        rgb, mask = phantom_endo_image(_rng(1, i), 64)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == bool
        fracs.append(mask.mean())
        # mucosa is reddish: red channel dominates inside the field of view
        lit = rgb.sum(-1) > 60
        assert rgb[lit, 0].mean() > rgb[lit, 1].mean() > 0
    fracs = np.array(fracs)
    assert fracs.min() > 0.003 and fracs.max() < 0.4
    assert fracs.min() < 0.05 and fracs.max() > 0.12 and fracs.std() > 0.03


def test_endo_layout(tmp_path: Path) -> None:
    root = generate("phantom-endo", tmp_path / "endo", seed=0, **SMALL)
    images = sorted((root / "images").glob("*.png"))
    masks = sorted((root / "masks").glob("*.png"))
    assert len(images) == 12 and [p.stem for p in images] == [p.stem for p in masks]
    for ip, mp in zip(images, masks, strict=True):
        im, mk = Image.open(ip), Image.open(mp)
        assert im.mode == "RGB" and mk.mode == "L" and im.size == mk.size == (64, 64)
        values = set(np.unique(np.asarray(mk)).tolist())
        assert values <= {0, 255} and 255 in values
    splits = _read_split(root / "splits")
    ids = sorted(i for v in splits.values() for i in v)
    assert ids == [p.stem for p in images]
    assert not (root / "volumes").exists()


# ------------------------------------------------------------------------------- caching
def _params(root: Path) -> dict:
    return json.loads((root / "builtin.json").read_text())


def test_cache_hit_returns_without_regenerating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = generate("phantom-ct", tmp_path / "d", seed=0, count=4, size=32, volumes=1)
    assert (root / ".complete").is_file()
    assert _params(root) | {"version": 0} == {
        "name": "phantom-ct",
        "seed": 0,
        "count": 4,
        "size": 32,
        "volumes": 1,
        "version": 0,
        "volume_shape": [32, 32, 32],
        "inputs": {"nifti": {"kind": "window", "window": [-160.0, 240.0]}},
    }

    def boom(*_a, **_k):
        raise AssertionError("regenerated")

    monkeypatch.setattr(builtin, "_write_ct", boom)
    assert generate("phantom-ct", tmp_path / "d", seed=0, count=4, size=32, volumes=1) == root


def test_missing_marker_or_changed_parameters_regenerate(tmp_path: Path) -> None:
    root = generate("phantom-ct", tmp_path / "d", seed=0, count=4, size=32, volumes=0)
    first = _files(root)
    (root / ".complete").unlink()
    victim = next((root / "images").iterdir())
    victim.unlink()
    generate("phantom-ct", root, seed=0, count=4, size=32, volumes=0)
    assert _files(root) == first

    generate("phantom-ct", root, seed=0, count=3, size=32, volumes=0)
    assert _params(root)["count"] == 3 and len(list((root / "images").iterdir())) == 3
    generate("phantom-ct", root, seed=5, count=3, size=32, volumes=0)
    assert _params(root)["seed"] == 5
    assert not list(tmp_path.glob("d.tmp-*"))


def test_interrupted_generation_is_not_mistaken_for_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = builtin._save_png

    def flaky(arr: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(arr, path)

    monkeypatch.setattr(builtin, "_save_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate("phantom-endo", tmp_path / "e", count=6, size=32)
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob("e.tmp-*"))
    monkeypatch.setattr(builtin, "_save_png", real)
    root = generate("phantom-endo", tmp_path / "e", count=6, size=32)
    assert (root / ".complete").is_file() and len(list((root / "images").iterdir())) == 6


def test_stale_tmp_of_dead_process_is_cleaned(tmp_path: Path) -> None:
    stale = tmp_path / "e.tmp-999999999"
    (stale / "images").mkdir(parents=True)
    generate("phantom-endo", tmp_path / "e", count=2, size=32)
    assert not stale.exists()


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a medseg built-in"):
        generate("phantom-endo", foreign, count=2, size=32)
    assert (foreign / "notes.txt").read_text() == "precious"


def test_regenerating_never_deletes_files_it_did_not_write(tmp_path: Path) -> None:
    """A generation lists its files (builtin-files.txt); regenerating over user files refuses, keeps them."""
    root = generate("phantom-endo", tmp_path / "e", count=2, size=32)
    listed = (root / builtin.MANIFEST).read_text().split()
    assert "images/endo_0000.png" in listed and "splits/train.txt" in listed
    (root / "images" / "notes.txt").write_text("precious")
    (root / "mine").mkdir()
    with pytest.raises(ValueError, match="medseg did not write"):
        generate("phantom-endo", root, count=3, size=32)
    assert (root / "images" / "notes.txt").read_text() == "precious" and (root / "mine").is_dir()
    with pytest.raises(ValueError, match="not 'phantom-ct'"):
        generate("phantom-ct", root, count=3, size=32, volumes=0)
    (root / "images" / "notes.txt").unlink()
    (root / "mine").rmdir()
    generate("phantom-endo", root, count=3, size=32)  # only its own files: regenerated
    assert len(list((root / "images").iterdir())) == 3
