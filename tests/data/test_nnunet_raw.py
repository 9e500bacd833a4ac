"""nnU-Net / MSD raw NIfTI reader: orientation, spacing, write-back round trip, splits, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.config import DataConfig
from medseg.data.base import SliceDataset
from medseg.data.nnunet_raw import (
    NnUNetRawReader,
    from_nifti_array,
    load_nifti_case,
    slice_axes,
    to_nifti_array,
    write_array_nifti,
    write_like,
)
from medseg.data.readers import build_reader
from medseg.utils import DataError

SHAPE_XYZ = (6, 5, 4)  # X, Y, Z
ZOOMS = (0.8, 0.7, 2.5)


def _affine() -> np.ndarray:
    a = np.eye(4)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # in-plane rotation
    a[:3, :3] = rot @ np.diag(ZOOMS)  # column norms = voxel sizes
    a[:3, 3] = (10.0, -20.0, 5.0)
    return a


def _save(arr: np.ndarray, path: Path, dtype=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr if dtype is None else arr.astype(dtype), _affine())
    nib.save(img, str(path))


def _dataset(root: Path, n: int = 3, channels: int = 2, labels_json: dict | None = None) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for i in range(n):
        case = f"case_{i:03d}"
        chans = [rng.normal(40, 100, SHAPE_XYZ).astype(np.float32) for _ in range(channels)]
        lab = np.zeros(SHAPE_XYZ, np.uint8)
        lab[1:3, 1:4, 1] = 1
        lab[4, 2, 3] = 2
        for c, arr in enumerate(chans):
            _save(arr, root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        _save(lab, root / "labelsTr" / f"{case}.nii.gz", np.uint8)
        data[case] = (chans, lab)
    meta = {
        "channel_names": {str(c): f"mod{c}" for c in range(channels)},
        "labels": labels_json or {"background": 0, "organ": 1, "tumour": 2},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return data


def test_orientation_spacing_and_write_back(tmp_path):
    root = tmp_path / "Dataset001"
    data = _dataset(root)
    r = build_reader(DataConfig(format="nnunet_raw", root=str(root), num_classes=3, in_channels=2))
    assert isinstance(r, NnUNetRawReader) and r.class_names == ["background", "organ", "tumour"]
    assert r.channel_names == ["mod0", "mod1"]
    case = r.load("case_001")
    chans, lab = data["case_001"]
    assert case.is_volume and case.image.shape == (2, 4, 5, 6)  # [C, Z, Y, X]
    np.testing.assert_allclose(case.image[1], chans[1].transpose(2, 1, 0), rtol=1e-6)
    np.testing.assert_array_equal(case.label, lab.transpose(2, 1, 0))
    assert case.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert r.num_slices("case_001") == 4
    np.testing.assert_array_equal(from_nifti_array(to_nifti_array(case.label)), case.label)
    # a prediction written back lands in the input's voxel grid with its affine and zooms
    pred = (case.label[::-1] + 1) % 3
    out = write_like(pred, case, tmp_path / "out" / "case_001.nii.gz")
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, _affine())
    assert back.header.get_zooms() == pytest.approx(ZOOMS)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), to_nifti_array(pred))
    np.testing.assert_array_equal(from_nifti_array(np.asanyarray(back.dataobj)), pred)
    assert not list((tmp_path / "out").glob(".*"))  # no temp file left
    # reference given as a file path; wrong shape is refused
    write_like(pred, case.meta["image_paths"][0], tmp_path / "out2.nii")
    assert np.array_equal(np.asanyarray(nib.load(str(tmp_path / "out2.nii")).dataobj), to_nifti_array(pred))
    with pytest.raises(ValueError, match="does not match the reference"):
        write_like(pred[:2], case, tmp_path / "bad.nii.gz")
    # a single input file (medseg predict): channel siblings are gathered; no-reference writer
    single = load_nifti_case(root / "imagesTr" / "case_001_0000.nii.gz")
    assert single.id == "case_001" and single.image.shape == (2, 4, 5, 6) and single.spacing == case.spacing
    np.testing.assert_array_equal(single.image, case.image)
    plain = nib.load(str(write_array_nifti(pred, tmp_path / "plain.nii.gz", spacing=case.spacing)))
    assert plain.header.get_zooms() == pytest.approx(ZOOMS) and plain.shape == SHAPE_XYZ


def test_splits_seeded_json_and_imagests(tmp_path):
    root = tmp_path / "d"
    _dataset(root, n=10, channels=1)
    r = NnUNetRawReader(root, num_classes=3)
    parts = [r.ids(s) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [7, 1, 2] and sorted(sum(parts, [])) == r.ids("all")
    r2 = NnUNetRawReader(root, num_classes=3, fractions=(0.5, 0.2, 0.3), split_seed=3)
    assert [len(r2.ids(s)) for s in ("train", "val", "test")] == [5, 2, 3]
    folds = [
        {"train": ["case_000", "case_001"], "val": ["case_002"]},
        {"train": ["case_002"], "val": ["case_000"]},
    ]
    (root / "splits_final.json").write_text(json.dumps(folds))
    assert NnUNetRawReader(root, num_classes=3, fold=1).ids("val") == ["case_000"]
    r3 = NnUNetRawReader(root, num_classes=3)
    assert r3.ids("train") == ["case_000", "case_001"] and r3.ids("val") == ["case_002"]
    with pytest.raises(DataError, match=r"unknown split 'test'; available splits: train, val, all"):
        r3.ids("test")
    _save(np.zeros(SHAPE_XYZ, np.float32), root / "imagesTs" / "new_000_0000.nii.gz")
    r4 = NnUNetRawReader(root, num_classes=3)
    assert r4.ids("imagesTs") == ["new_000"] and r4.load("new_000").label is None
    (root / "splits_final.json").write_text(json.dumps([{"train": ["case_099"], "val": []}]))
    with pytest.raises(DataError, match=r"splits_final\.json: unknown id 'case_099'"):
        NnUNetRawReader(root, num_classes=3)


def test_msd_style_and_errors(tmp_path):
    root = tmp_path / "Task01"
    rng = np.random.default_rng(1)
    img4d = rng.normal(size=(*SHAPE_XYZ, 2)).astype(np.float32)  # MSD: channels in the 4th axis
    _save(img4d, root / "imagesTr" / "la_003.nii.gz")
    _save(np.zeros(SHAPE_XYZ), root / "labelsTr" / "la_003.nii.gz", np.uint8)
    meta = {"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "atrium"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    r = NnUNetRawReader(root, num_classes=2, in_channels=2)
    case = r.load("la_003")
    assert r.class_names == ["background", "atrium"] and case.image.shape == (2, 4, 5, 6)
    np.testing.assert_allclose(case.image[1], img4d[..., 1].transpose(2, 1, 0), rtol=1e-6)
    with pytest.raises(
        DataError, match=r"dataset\.json: 2 labels \(background, atrium\) but data\.num_classes is 3"
    ):
        NnUNetRawReader(root, num_classes=3)
    # label out of range, shape mismatch, unreadable file, missing label / channel
    _save(np.full(SHAPE_XYZ, 5), root / "labelsTr" / "la_003.nii.gz", np.uint8)
    with pytest.raises(DataError, match=r"labelsTr/la_003\.nii\.gz: label value 5 is outside 0\.\.1"):
        r.load("la_003")
    _save(np.zeros((6, 5, 3)), root / "labelsTr" / "la_003.nii.gz", np.uint8)
    with pytest.raises(
        DataError, match=r"labelsTr/la_003\.nii\.gz: label shape .* differs from the image shape"
    ):
        r.load("la_003")
    (root / "imagesTr" / "la_003.nii.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"imagesTr/la_003\.nii\.gz: cannot read NIfTI"):
        r.load("la_003")
    other = tmp_path / "v2"
    _dataset(other, n=2, channels=2)
    (other / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_001_0000\.nii\.gz: missing label: no case_001\.nii\.gz"):
        NnUNetRawReader(other, num_classes=3, in_channels=2)
    (other / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(
        DataError, match=r"case 'case_001' is missing channel file\(s\) case_001_0001\.nii\.gz"
    ):
        NnUNetRawReader(other, num_classes=3, in_channels=2)


def test_nifti_slices_skip_empty(tmp_path):
    root = tmp_path / "d"
    _dataset(root, n=1, channels=1)  # label has foreground on z = 1 and z = 3 only
    r = NnUNetRawReader(root, num_classes=3)
    cfg = DataConfig(
        format="nnunet_raw",
        root=str(root),
        num_classes=3,
        size=(5, 6),
        skip_empty_slices=True,
        normalize={"kind": "window", "window": (-100, 300)},
        augment={"preset": "none"},
    )
    all_slices = SliceDataset.from_config(r, ["case_000"], cfg, train=False)
    train = SliceDataset.from_config(r, ["case_000"], cfg, train=True)
    assert len(all_slices) == 4 and [k for _, k in train.index] == [1, 3]
    s = train[1]
    assert s["slice"] == 3 and s["spacing"] == pytest.approx((2.5, 0.7, 0.8)) and s["orig_size"] == (5, 6)
    assert s["label"][2, 4] == 2 and 0.0 <= s["image"].min() and s["image"].max() <= 1.0


def test_mda_recipes_train_on_organ_slices_unless_all_slices(tmp_path):
    """data.skip_empty_slices (SliceDataset: Reader.foreground_slices) is what the MDA recipes filter training
    slices with; preset all_slices turns it off, so training sees every slice, as evaluation always does."""
    from medseg.config import load_config

    root = tmp_path / "d"
    _dataset(root, n=1, channels=1)  # foreground on z = 1 and z = 3 of 4 slices
    r = NnUNetRawReader(root, num_classes=3)
    sets = [f"data.root={root}", "data.size=[5,6]"]
    organ_only = load_config("mda_unet_kits", sets).data
    every = load_config("mda_unet_kits", ["preset=all_slices", *sets]).data
    assert organ_only.skip_empty_slices and not every.skip_empty_slices
    assert [k for _, k in SliceDataset.from_config(r, ["case_000"], organ_only, train=True).index] == [1, 3]
    assert [k for _, k in SliceDataset.from_config(r, ["case_000"], every, train=True).index] == [0, 1, 2, 3]
    assert len(SliceDataset.from_config(r, ["case_000"], organ_only, train=False)) == 4  # evaluation: all


def _slices_first_affine() -> np.ndarray:
    """KiTS19-like storage: voxel axis 0 runs cranially (S), axis 1 posterior (P), axis 2 left (L)."""
    a = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 3] = 2.5, -0.8, -0.7, 1.0
    a[:3, 3] = (30.0, 40.0, -50.0)
    return a


def test_slice_axis_follows_the_affine(tmp_path):
    """Data stored (D, rows, cols) with S first: slices are axial, spacing (D, H, W), write-back exact."""
    affine = _slices_first_affine()
    assert nib.aff2axcodes(affine) == ("S", "P", "L") and slice_axes(affine) == (0, 2, 1)
    rng = np.random.default_rng(2)
    data = rng.normal(size=(4, 6, 5)).astype(np.float32)  # (S, P, L) = 4 axial slices of 6 x 5 voxels
    lab = np.zeros((4, 6, 5), np.uint8)
    lab[1, 2:4, 1] = 1
    lab[3, 5, 4] = 2
    root = tmp_path / "kits"
    for arr, rel in ((data, "imagesTr/case_00001_0000.nii.gz"), (lab, "labelsTr/case_00001.nii.gz")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, affine), str(root / rel))
    r = NnUNetRawReader(root, num_classes=3)
    case = r.load("case_00001")
    # D = voxel axis 0 (S); H, W = axes 2 and 1 (SimpleITK/nnU-Net in-plane order)
    assert case.image.shape == (1, 4, 5, 6) and r.num_slices("case_00001") == 4
    np.testing.assert_array_equal(case.image[0, 3], data[3].T)
    np.testing.assert_array_equal(case.label, lab.transpose(0, 2, 1))
    assert case.label[1, 1, 2] == 1 and case.label[3, 4, 5] == 2
    assert case.spacing == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_array_equal(r.foreground_slices("case_00001"), [False, True, False, True])
    # a prediction goes back in the input's (S, P, L) layout with the input's affine
    pred = (case.label + 1) % 3
    for ref in (case, root / "imagesTr" / "case_00001_0000.nii.gz"):
        back = nib.load(str(write_like(pred, ref, tmp_path / "out.nii.gz")))
        assert back.shape == (4, 6, 5) and nib.aff2axcodes(back.affine) == ("S", "P", "L")
        np.testing.assert_allclose(back.affine, affine)
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), (lab + 1) % 3)
    single = load_nifti_case(root / "imagesTr" / "case_00001_0000.nii.gz")
    assert single.image.shape == (1, 4, 5, 6) and single.spacing == case.spacing
    with pytest.raises(ValueError, match=r"does not match the reference volume \(4, 5, 6\)"):
        write_like(pred[:, :, :5], case, tmp_path / "bad.nii.gz")
