"""Polyp protocol: hand-computed values and py_sod_metrics as the oracle."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medseg.metrics import PRANET_THRESHOLDS, PolypEvaluator, binarize_gt, polyp_markdown

sod = pytest.importorskip("py_sod_metrics")

# prob                         gt (0/255 PNG)
# 0.9 0.8 0.1 0.0              255 255   0   0
# 0.7 0.5 0.2 0.0              255 255   0   0
# 0.4 0.6 0.3 0.0              255   0   0   0
# 0.0 0.0 0.0 0.0                0   0   0   0
# prob >= 0.5: (0,0) (0,1) (1,0) (1,1) (2,1) -> 5 px; gt: 5 px; tp = 4
# Dice@0.5 = 2*4 / (5 + 5) = 0.8;  IoU@0.5 = 4 / (5 + 5 - 4) = 2/3
# MAE: on gt 0.1+0.2+0.3+0.5+0.6 = 1.7; off gt 0.1+0.2+0.6+0.3 = 1.2; (1.7 + 1.2) / 16 = 0.18125
PROB = np.array([[0.9, 0.8, 0.1, 0.0], [0.7, 0.5, 0.2, 0.0], [0.4, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0]])
GT = np.array([[255, 255, 0, 0], [255, 255, 0, 0], [255, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)


def test_tiny_case_hand_computed() -> None:
    ev = PolypEvaluator()
    row = ev.add("tiny", PROB, GT)
    assert row["dice"] == pytest.approx(0.8)
    assert row["iou"] == pytest.approx(2 / 3)
    assert row["MAE"] == pytest.approx(0.18125)
    res = ev.results()
    assert res["dice"] == pytest.approx(0.8) and res["MAE"] == pytest.approx(0.18125)
    assert res["n_images"] == 1 and res["threshold"] == 0.5 and res["minmax"] is False


def _images(seed: int = 0, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Small soft maps; half of them quantised to k/255 to hit the thresholds exactly."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = np.zeros((20, 24), dtype=np.uint8)
        y, x = rng.integers(2, 10), rng.integers(2, 12)
        g[y : y + 8, x : x + 9] = 255
        p = np.clip(0.55 * (g > 0) + 0.5 * rng.random(g.shape), 0, 1)
        if i % 2:
            p = np.round(p * 255) / 255
        out.append((p, g))
    return out


def test_threshold_sweep_equals_direct_loop() -> None:
    imgs = _images()
    ev = PolypEvaluator()
    for i, (p, g) in enumerate(imgs):
        ev.add(f"im{i}", p, g)
    # PraNet main.m: for each threshold 1:-1/255:0, Fmeasure_calu(prob >= t) with 0 when tp == 0
    thresholds = np.arange(255, -1, -1) / 255.0
    dice_curves, iou_curves = [], []
    for p, g in imgs:
        gb = g > 128
        d, j = [], []
        for t in thresholds:
            b = p >= t
            tp = np.count_nonzero(b & gb)
            d.append(0.0 if tp == 0 else 2 * tp / (b.sum() + gb.sum()))
            j.append(0.0 if tp == 0 else tp / (b.sum() + gb.sum() - tp))
        dice_curves.append(d)
        iou_curves.append(j)
    mean_dice_curve = np.mean(dice_curves, axis=0)  # mean over images per threshold
    res = ev.results()
    assert res["meanDic"] == pytest.approx(mean_dice_curve.mean(), abs=1e-12)
    assert res["maxDic"] == pytest.approx(mean_dice_curve.max(), abs=1e-12)
    assert res["meanIoU"] == pytest.approx(np.mean(iou_curves, axis=0).mean(), abs=1e-12)
    np.testing.assert_allclose(ev.curves()["dice"], mean_dice_curve, atol=1e-12)
    np.testing.assert_array_equal(ev.curves()["thresholds"], PRANET_THRESHOLDS)
    # per-image values are the per-image curve means
    assert ev.per_image()[1]["meanDic"] == pytest.approx(np.mean(dice_curves[1]), abs=1e-12)


def test_structure_measures_equal_py_sod_metrics() -> None:
    imgs = _images(seed=1) + [(PROB, GT)]
    ev = PolypEvaluator()
    sm, em, wfm, mae = sod.Smeasure(alpha=0.5), sod.Emeasure(), sod.WeightedFmeasure(beta=1), sod.MAE()
    for i, (p, g) in enumerate(imgs):
        ev.add(f"im{i}", p, g)
        for m in (sm, em, wfm, mae):
            m.step(p.astype(np.float64), g > 128, normalize=False)
    res = ev.results()
    em_curve = em.get_results()["em"]["curve"]
    assert res["Sm"] == pytest.approx(sm.get_results()["sm"], abs=1e-12)
    assert res["wFm"] == pytest.approx(wfm.get_results()["wfm"], abs=1e-12)
    assert res["MAE"] == pytest.approx(mae.get_results()["mae"], abs=1e-12)
    assert res["meanEm"] == pytest.approx(em_curve.mean(), abs=1e-12)
    assert res["maxEm"] == pytest.approx(em_curve.max(), abs=1e-12)
    assert res["adpEm"] == pytest.approx(em.get_results()["em"]["adp"], abs=1e-12)
    assert [r["Sm"] for r in ev.per_image()] == pytest.approx(sm.sms, abs=1e-12)


def test_minmax_on_uint8_maps_is_the_pranet_normalisation() -> None:
    # py_sod_metrics' normalize=True path is PraNet's main.m: im2double, mapminmax, gt > 128
    rng = np.random.default_rng(2)
    ev = PolypEvaluator(minmax=True)
    sm, wfm = sod.Smeasure(), sod.WeightedFmeasure()
    for i, (p, g) in enumerate(_images(seed=3)):
        p8 = (p * 200 + rng.integers(0, 30)).astype(np.uint8)
        ev.add(f"im{i}", p8, g)
        sm.step(p8, g)
        wfm.step(p8, g)
    res = ev.results()
    assert res["Sm"] == pytest.approx(sm.get_results()["sm"], abs=1e-12)
    assert res["wFm"] == pytest.approx(wfm.get_results()["wfm"], abs=1e-12)


def test_binarize_gt() -> None:
    assert binarize_gt(np.array([0, 128, 129, 255], dtype=np.uint8)).tolist() == [False, False, True, True]
    assert binarize_gt(np.array([0, 1, 1, 0], dtype=np.int64)).tolist() == [False, True, True, False]
    assert binarize_gt(np.array([0.2, 0.5, 0.51, 1.0])).tolist() == [False, False, True, True]
    assert binarize_gt(np.array([True, False])).tolist() == [True, False]


def test_input_validation() -> None:
    ev = PolypEvaluator()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.add("logits", PROB * 4 - 2, GT)
    with pytest.raises(ValueError, match="equal shape"):
        ev.add("shape", PROB, GT[:3])
    with pytest.raises(TypeError):
        ev.add("ints", (PROB > 0.5).astype(np.int64), GT)
    with pytest.raises(ValueError, match="no image"):
        ev.results()


def test_csv_and_markdown(tmp_path) -> None:
    ev = PolypEvaluator()
    for i, (p, g) in enumerate(_images(seed=4, n=3)):
        ev.add(f"im{i}.png", p, g)
    path = ev.to_csv(tmp_path / "polyp.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["im0.png", "im1.png", "im2.png"]
    assert float(rows[2]["meanDic"]) == pytest.approx(ev.per_image()[2]["meanDic"])

    res = ev.results()
    md = polyp_markdown({"Kvasir": res, "ETIS": {**res, "meanDic": 0.5}})
    lines = md.splitlines()
    assert lines[0] == TABLE_HEADER
    cells = lines[2].strip("| ").split(" | ")
    expected = [res[k] for k in ("dice", "iou", "meanDic", "meanIoU", "wFm", "Sm", "meanEm", "maxEm", "MAE", "softDice")]
    assert cells[0] == "Kvasir" and [float(c) for c in cells[1:]] == pytest.approx(expected, abs=5e-4)
    assert lines[3].split(" | ")[3] == "0.500"  # ETIS's mDice PraNet
    md2 = polyp_markdown({"Kvasir": res}, columns=[("Dice@0.5", "dice")], digits=4)
    assert md2.splitlines()[2] == f"| Kvasir | {res['dice']:.4f} |"


TABLE_HEADER = ("| Dataset | mDice@0.5 | mIoU@0.5 | mDice PraNet | mIoU PraNet | Fwβ | Sα | mEφ | maxEφ | MAE "
                "| mDice soft (MSNet metric.py) |")


def test_table_columns_and_values_hand_made() -> None:
    # 4x5 images (20 px), gt a 2x2 block (4 px). A: prob = gt (perfect). B: prob = 0.3 everywhere.
    g = np.zeros((4, 5), dtype=np.uint8)
    g[1:3, 1:3] = 255
    ev = PolypEvaluator()
    a = ev.add("a", (g > 0).astype(np.float64), g)
    b = ev.add("b", np.full((4, 5), 0.3), g)
    # Sweep: a mask equal to gt for t = 1/255..1 (Dice 1, IoU 1); at t = 0 every pixel is positive
    # (Dice 2*4/(4+20) = 1/3, IoU 4/20). B is all positive for t = k/255 <= 0.3 (k = 0..76, 77 values), else 0.
    mdice = ((255 + 1 / 3) / 256 + 77 * (1 / 3) / 256) / 2
    miou = ((255 + 0.2) / 256 + 77 * 0.2 / 256) / 2
    mae = (0.0 + (16 * 0.3 + 4 * 0.7) / 20) / 2  # 0.19
    assert a["Sm"] == pytest.approx(1.0) and a["wFm"] == pytest.approx(1.0) and a["MAE"] == 0.0
    res = ev.results()
    md = polyp_markdown({"CVC-300": res, "Kvasir": res}, digits=6)
    lines = md.splitlines()
    assert lines[0] == TABLE_HEADER and len(lines) == 4
    cells = [float(c) for c in lines[2].strip("| ").split(" | ")[1:]]
    # Dice/IoU at 0.5: A 1 and B 0 (nothing >= 0.5) -> mean over images 0.5
    assert cells[:4] == pytest.approx([0.5, 0.5, mdice, miou], abs=1e-6)
    assert cells[4:6] == pytest.approx([(1 + b["wFm"]) / 2, (1 + b["Sm"]) / 2], abs=1e-6)
    assert cells[6:8] == pytest.approx([res["meanEm"], res["maxEm"]], abs=1e-6)
    assert cells[8] == pytest.approx(mae, abs=1e-6)
    # MSNet metric.py's soft Dice: A (8 + 1e-5) / (8 + 1e-5) = 1; B sum(p g) = 4 * 0.3, sum g = 4, sum p = 20 * 0.3
    soft_b = (2 * 1.2 + 1e-5) / (4 + 6 + 1e-5)
    assert a["softDice"] == pytest.approx(1.0, abs=1e-12) and b["softDice"] == pytest.approx(soft_b, abs=1e-12)
    assert cells[9] == pytest.approx((1 + soft_b) / 2, abs=1e-6)
    assert [ln.split(" | ")[0] for ln in lines[2:]] == ["| CVC-300", "| Kvasir"]


def test_soft_dice_is_msnet_metric_py() -> None:
    """``cal_dice`` of MSNet's utils/metric.py, by hand: no threshold, smoothing 1e-5 on both sides."""
    from medseg.metrics.polyp import soft_dice

    p = np.array([[0.9, 0.2], [0.5, 0.0]])
    g = np.array([[1, 0], [1, 0]], dtype=bool)
    # sum(p g) = 1.4, sum g = 2, sum p = 1.6 -> (2.8 + 1e-5) / (3.6 + 1e-5)
    assert soft_dice(p, g) == pytest.approx((2.8 + 1e-5) / (3.6 + 1e-5), abs=1e-12)
    assert soft_dice(np.zeros((2, 2)), np.zeros((2, 2), dtype=bool)) == pytest.approx(1.0)  # both empty: 1e-5/1e-5
    # in the evaluator the map is min-max normalised first (minmax=True): 0.2..0.6 -> 0..1
    ev = PolypEvaluator(minmax=True)
    row = ev.add("x", np.array([[0.6, 0.2], [0.4, 0.2]]), g)
    assert row["softDice"] == pytest.approx((2 * 1.5 + 1e-5) / (2 + 1.5 + 1e-5), abs=1e-12)
