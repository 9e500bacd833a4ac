"""Volume-wise evaluation on tiny Synapse-format and NIfTI files with a known prediction, checked by hand."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from medseg.config import Config
from medseg.data.readers import build_reader
from medseg.engine.evaluate import evaluate_split


def _synapse_layout(root):
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    (root / "lists" / "lists_Synapse").mkdir(parents=True)
    rng = np.random.default_rng(0)
    img = rng.uniform(-300, 400, (16, 16)).astype(np.float32)
    np.savez(root / "train_npz" / "case0005_slice000.npz", image=img, label=np.zeros((16, 16), np.float32))
    vol = rng.uniform(-300, 400, (8, 16, 16)).astype(np.float32)
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[2:6, 2:6, 2:6] = 1  # a 4x4x4 cube
    lab[1:3, 10:13, 10:13] = 2  # a small organ the "model" misses
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f["image"] = vol
        f["label"] = lab
    (root / "lists" / "lists_Synapse" / "train.txt").write_text("case0005_slice000\n")
    (root / "lists" / "lists_Synapse" / "test_vol.txt").write_text("case0001\n")
    return lab


class KnownPredictor:
    """Class 1 shifted by one voxel along the last axis; class 2 missed entirely."""

    def __init__(self, cfg):
        self.cfg = cfg

    def predict_case(self, case):
        pred = np.zeros_like(case.label)
        pred[:, :, 1:][case.label[:, :, :-1] == 1] = 1
        return pred, np.zeros((3,) + pred.shape, np.float32)


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_volume_metrics_equal_hand_values(tmp_path, mode):
    lab = _synapse_layout(tmp_path / "Synapse")
    cfg = Config.model_validate({"data": {"format": "transunet", "root": str(tmp_path / "Synapse"), "num_classes": 3,
                                          "class_names": ["background", "cube", "small"]}})
    reader = build_reader(cfg.data)
    case = reader.load("case0001")
    assert case.is_volume and case.image.shape == (1, 8, 16, 16)
    np.testing.assert_array_equal(case.label, lab)
    summary = evaluate_split(KnownPredictor(cfg), reader, ["case0001"], split="test_vol", mode=mode,
                             protocol="auto", out=tmp_path / "eval")
    assert summary["protocol"] == "volume"
    cube, small = summary["classes"]["1"], summary["classes"]["2"]
    # cube: |P| = |G| = 64, overlap 4*4*3 = 48 -> Dice 96/128, IoU 48/80
    assert cube["dice"]["mean"] == pytest.approx(0.75)
    assert cube["iou"]["mean"] == pytest.approx(0.6)
    # 56 border voxels each way; 20 of them at distance 1, the rest 0 -> pooled P95 = 1, ASD = 20/56
    assert cube["hd95"]["mean"] == pytest.approx(1.0)
    assert cube["asd"]["mean"] == pytest.approx(20 / 56)
    if mode == "paper":  # TransUNet: an empty prediction scores Dice 0 and HD95 0
        assert small["dice"]["mean"] == 0.0 and small["hd95"]["mean"] == 0.0
        assert summary["average"]["dice"]["mean"] == pytest.approx(0.375)
        assert summary["average"]["hd95"]["mean"] == pytest.approx(0.5)
    else:  # strict: Dice 0, the distance is excluded and counted
        assert small["dice"]["mean"] == 0.0 and small["hd95"]["excluded"] == 1
        assert summary["average"]["hd95"]["mean"] == pytest.approx(1.0)
    md = (tmp_path / "eval" / "table.md").read_text()
    assert md.splitlines()[0].startswith("| Dice (%) | HD95 | mIoU (%) | cube Dice | small Dice |")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["cases"] == 1


def test_save_predictions_writes_the_predicted_volume_as_nifti(tmp_path):
    import nibabel as nib

    from medseg.data.nnunet_raw import to_nifti_array

    lab = _synapse_layout(tmp_path / "Synapse")
    cfg = Config.model_validate({"data": {"format": "transunet", "root": str(tmp_path / "Synapse"), "num_classes": 3}})
    reader = build_reader(cfg.data)
    evaluate_split(KnownPredictor(cfg), reader, ["case0001"], split="test_vol", mode="paper", protocol="auto",
                   out=tmp_path / "eval", save_predictions=True)
    img = nib.load(tmp_path / "eval" / "predictions" / "case0001.nii.gz")
    expected, _ = KnownPredictor(cfg).predict_case(reader.load("case0001"))
    assert img.shape == to_nifti_array(lab).shape
    np.testing.assert_array_equal(np.asarray(img.dataobj), to_nifti_array(expected))
    assert set(np.unique(np.asarray(img.dataobj))) == {0, 1}


def test_label_groups_appear_in_every_table(tmp_path):
    """eval.label_groups: the union cube ∪ small is one more class in cases.csv, summary.json, table.md."""
    _synapse_layout(tmp_path / "Synapse")
    cfg = Config.model_validate({"data": {"format": "transunet", "root": str(tmp_path / "Synapse"), "num_classes": 3,
                                          "class_names": ["background", "cube", "small"]},
                                 "eval": {"label_groups": {"cube_and_small": [1, 2]}}})
    reader = build_reader(cfg.data)
    summary = evaluate_split(KnownPredictor(cfg), reader, ["case0001"], split="test_vol", mode="paper",
                             protocol="auto", out=tmp_path / "eval")
    # |G| = 64 + 18 = 82, |P| = 64 (the shifted cube), overlap 48
    union = summary["classes"]["3"]
    assert union["name"] == "cube_and_small" and union["group"] is True
    assert union["dice"]["mean"] == pytest.approx(96 / 146)
    assert union["precision"]["mean"] == pytest.approx(0.75) and union["recall"]["mean"] == pytest.approx(48 / 82)
    assert summary["average"]["dice"]["mean"] == pytest.approx(0.375)  # still the mean over labels
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["label_groups"] == {"cube_and_small": [1, 2]} and saved["classes"]["3"]["name"] == "cube_and_small"
    csv_rows = (tmp_path / "eval" / "cases.csv").read_text().splitlines()
    assert len(csv_rows) == 4 and csv_rows[3].startswith("case0001,3,cube_and_small,")
    md = (tmp_path / "eval" / "table.md").read_text().splitlines()
    assert md[0].endswith("| small Dice | cube_and_small Dice |") and f"{100 * 96 / 146:.2f}" in md[2]
    assert any(line.startswith("| Metric | Average | cube | small | cube_and_small |") for line in md)


# Anisotropic NIfTI volume [D, H, W] = 8 x 5 x 6, spacing (3.0, 0.8, 0.5) mm; every object is one voxel thick.
NII_SPACING = (3.0, 0.8, 0.5)


def _plates() -> tuple[np.ndarray, np.ndarray]:
    """Class 1: a 3x3 plate predicted two slices too high; class 2: a 2x2 plate shifted one column."""
    gt = np.zeros((8, 5, 6), np.uint8)
    pred = np.zeros_like(gt)
    gt[2, 1:4, 1:4] = 1
    pred[4, 1:4, 1:4] = 1
    gt[6, 1:3, 1:3] = 2
    pred[6, 1:3, 2:4] = 2
    return gt, pred


def _nifti_case(root, gt_dhw: np.ndarray, layout: str) -> None:
    """One nnU-Net raw case: (x, y, z) = (W, H, D) as L-P-S, or KiTS-like (D, W, H) as S-P-L."""
    import nibabel as nib

    sd, sh, sw = NII_SPACING
    if layout == "xyz":
        affine, to_file = np.diag([-sw, -sh, sd, 1.0]), (2, 1, 0)
    else:
        affine, to_file = np.zeros((4, 4)), (0, 2, 1)
        affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = sd, -sw, -sh, 1.0
    image = np.random.default_rng(0).normal(size=gt_dhw.shape).astype(np.float32)
    for arr, rel in ((image, "imagesTr/case_000_0000.nii.gz"), (gt_dhw, "labelsTr/case_000.nii.gz")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(to_file)), affine), str(root / rel))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "organ": 1, "tumour": 2}}))


class FixedPredictor:
    """Returns a fixed [D, H, W] prediction after checking the reader gave the expected label volume."""

    def __init__(self, cfg, gt, pred):
        self.cfg, self.gt, self.pred = cfg, gt, pred

    def predict_case(self, case):
        np.testing.assert_array_equal(case.label, self.gt)
        assert case.spacing == pytest.approx(NII_SPACING)
        return self.pred.astype(np.int64), np.zeros((3,) + self.pred.shape, np.float32)


@pytest.mark.parametrize("layout", ["xyz", "slices_first"])
@pytest.mark.parametrize("use_spacing", [True, False])
def test_volume_distances_in_mm_on_an_anisotropic_nifti(tmp_path, layout, use_spacing):
    gt, pred = _plates()
    _nifti_case(tmp_path / "nii", gt, layout)
    cfg = Config.model_validate({"data": {"format": "nnunet_raw", "root": str(tmp_path / "nii"), "num_classes": 3},
                                 "eval": {"use_spacing": use_spacing}})
    reader = build_reader(cfg.data)
    summary = evaluate_split(FixedPredictor(cfg, gt, pred), reader, ["case_000"], split="all", mode="paper",
                             protocol="auto", out=tmp_path / "eval")
    assert summary["protocol"] == "volume" and summary["distance_unit"] == ("mm" if use_spacing else "voxel")
    sd, _, sw = NII_SPACING if use_spacing else (1.0, 1.0, 1.0)
    plate, small = summary["classes"]["1"], summary["classes"]["2"]
    # class 1: no overlap; every voxel of either plate is 2 slices (2 x 3 mm) from the other plate
    assert plate["dice"]["mean"] == 0.0
    assert plate["hd95"]["mean"] == pytest.approx(2 * sd) and plate["asd"]["mean"] == pytest.approx(2 * sd)
    # class 2: half of each plate overlaps, the other half is one column (0.5 mm) away:
    # pooled distances [0, 0, 0, 0, w, w, w, w] -> P95 = w; pred -> gt mean = w / 2
    assert small["dice"]["mean"] == pytest.approx(0.5)
    assert small["hd95"]["mean"] == pytest.approx(sw) and small["asd"]["mean"] == pytest.approx(sw / 2)
    assert summary["average"]["hd95"]["mean"] == pytest.approx((2 * sd + sw) / 2)
    md = (tmp_path / "eval" / "table.md").read_text()
    assert f"HD95 ({'mm' if use_spacing else 'voxel'})" in md
