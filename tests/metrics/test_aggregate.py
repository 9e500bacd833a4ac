"""Per-case evaluation (paper / strict modes) and MetricTable writers."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medseg.metrics import (
    MetricTable,
    asd,
    assd,
    dice,
    evaluate_case,
    hd,
    hd95,
    iou,
    precision,
    recall,
    specificity,
)

ALL = ("dice", "iou", "hd95", "hd", "asd", "assd", "precision", "recall", "specificity")


def _four_situations() -> tuple[np.ndarray, np.ndarray]:
    """num_classes=5 on 10x10: class 1 in both (shifted), 2 only in gt, 3 only in pred, 4 nowhere."""
    gt = np.zeros((10, 10), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4] = 1
    pred[1:4, 2:5] = 1  # shifted by one column: dice = 2*6/18, hd95 1
    gt[6:9, 1:3] = 2  # missed organ
    pred[6:8, 6:9] = 3  # predicted an absent organ
    return pred, gt


def _by_class(rows: list[dict]) -> dict[int, dict]:
    return {r["class"]: r for r in rows}


def test_paper_mode_is_transunet_calculate_metric_percase() -> None:
    pred, gt = _four_situations()
    rows = _by_class(evaluate_case(pred, gt, num_classes=5, mode="paper", metrics=ALL))
    assert sorted(rows) == [1, 2, 3, 4]
    # both present: computed
    assert rows[1]["dice"] == pytest.approx(2 * 6 / 18)
    assert rows[1]["iou"] == pytest.approx(6 / 12)
    assert rows[1]["hd95"] == pytest.approx(hd95(pred == 1, gt == 1)) and rows[1]["hd"] == pytest.approx(1.0)
    assert (rows[1]["gt_empty"], rows[1]["pred_empty"]) == (False, False)
    # pred empty, gt present -> (0, 0)
    r = rows[2]
    assert (r["dice"], r["iou"], r["hd95"], r["hd"], r["asd"], r["assd"]) == (0, 0, 0, 0, 0, 0)
    assert (r["gt_empty"], r["pred_empty"]) == (False, True)
    assert (r["precision"], r["recall"], r["specificity"]) == (0.0, 0.0, 1.0)
    # pred present, gt empty -> Dice 1, HD95 0 (TransUNet), precision still 0 from the counts
    r = rows[3]
    assert (r["dice"], r["iou"], r["hd95"], r["asd"], r["assd"]) == (1, 1, 0, 0, 0)
    assert (r["gt_empty"], r["pred_empty"]) == (True, False)
    assert (r["precision"], r["recall"]) == (0.0, 0.0)
    assert r["specificity"] == pytest.approx(94 / 100)
    # both empty: "pred empty" branch -> (0, 0)
    r = rows[4]
    assert (r["dice"], r["iou"], r["hd95"], r["asd"]) == (0, 0, 0, 0)
    assert (r["gt_empty"], r["pred_empty"]) == (True, True)
    assert (r["precision"], r["recall"], r["specificity"]) == (1.0, 1.0, 1.0)


def test_strict_mode() -> None:
    pred, gt = _four_situations()
    rows = _by_class(evaluate_case(pred, gt, num_classes=5, mode="strict", metrics=ALL))
    assert rows[1]["dice"] == pytest.approx(2 * 6 / 18) and rows[1]["hd"] == pytest.approx(1.0)
    for c in (2, 3):  # exactly one empty: 0 and NaN distances
        assert (rows[c]["dice"], rows[c]["iou"]) == (0.0, 0.0)
        assert all(math.isnan(rows[c][m]) for m in ("hd95", "hd", "asd", "assd"))
    # both empty: 1 and NaN distances
    assert (rows[4]["dice"], rows[4]["iou"]) == (1.0, 1.0)
    assert all(math.isnan(rows[4][m]) for m in ("hd95", "hd", "asd", "assd"))


def test_binary_task_and_bool_inputs() -> None:
    p = np.zeros((12, 12), dtype=bool)
    g = np.zeros((12, 12), dtype=bool)
    p[2:6, 2:6] = True
    g[5:9, 2:6] = True
    (row,) = evaluate_case(p, g, num_classes=2, spacing=(2, 1))
    assert row["class"] == 1
    assert row["dice"] == pytest.approx(dice(p, g))
    assert row["hd95"] == pytest.approx(6.0)
    assert set(row) == {
        "class",
        "dice",
        "iou",
        "hd95",
        "asd",
        "assd",
        "precision",
        "recall",
        "specificity",
        "gt_empty",
        "pred_empty",
    }


def test_three_class_volume_equals_binary_functions() -> None:
    rng = np.random.default_rng(3)
    shape = (12, 20, 18)
    gt = np.argmax(gaussian_filter(rng.standard_normal((4, *shape)), (0, 2, 2, 2)), axis=0).astype(np.uint8)
    gt[:, :, :3] = 0  # some background margin
    pred = gt.copy()
    noise = gaussian_filter(rng.standard_normal(shape), 1.5)
    pred[noise > 0.25] = 0
    pred[noise < -0.3] = 2
    pred = np.roll(pred, 1, axis=1)
    spacing = (2.5, 0.8, 0.8)
    for hd_method in ("medpy", "monai"):
        rows = evaluate_case(pred, gt, num_classes=4, spacing=spacing, hd_method=hd_method, metrics=ALL)
        assert [r["class"] for r in rows] == [1, 2, 3]
        for r in rows:
            p, g = pred == r["class"], gt == r["class"]
            assert p.any() and g.any()
            assert r["dice"] == pytest.approx(dice(p, g), abs=1e-12)
            assert r["iou"] == pytest.approx(iou(p, g), abs=1e-12)
            assert r["precision"] == pytest.approx(precision(p, g), abs=1e-12)
            assert r["recall"] == pytest.approx(recall(p, g), abs=1e-12)
            assert r["specificity"] == pytest.approx(specificity(p, g), abs=1e-12)
            assert r["hd95"] == pytest.approx(hd95(p, g, spacing, method=hd_method), abs=1e-9)
            assert r["hd"] == pytest.approx(hd(p, g, spacing), abs=1e-9)
            assert r["asd"] == pytest.approx(asd(p, g, spacing), abs=1e-9)
            assert r["assd"] == pytest.approx(assd(p, g, spacing), abs=1e-9)


def test_evaluate_case_matches_medpy_on_a_volume() -> None:
    mb = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(5)
    gt = np.argmax(gaussian_filter(rng.standard_normal((3, 10, 16, 16)), (0, 2, 2, 2)), axis=0)
    pred = np.roll(gt, 2, axis=2)
    for r in evaluate_case(pred, gt, num_classes=3):
        p, g = pred == r["class"], gt == r["class"]
        assert r["dice"] == pytest.approx(mb.dc(p, g), abs=1e-9)
        assert r["hd95"] == pytest.approx(mb.hd95(p, g), abs=1e-6)
        assert r["asd"] == pytest.approx(mb.asd(p, g), abs=1e-6)


def test_argument_validation() -> None:
    g = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="labels must lie"):
        evaluate_case(g + 255, g, num_classes=2)
    with pytest.raises(ValueError, match="mode"):
        evaluate_case(g, g, num_classes=2, mode="lenient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_case(g, g, num_classes=2, metrics=("dice", "hd99"))
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_case(g, g[:3], num_classes=2)


# ----------------------------------------------------------------------------- MetricTable
def test_strict_summary_counts_exclusions() -> None:
    pred, gt = _four_situations()
    table = MetricTable(mode="strict", hd_method="medpy")
    table.add("a", evaluate_case(pred, gt, 5, mode="strict"))
    pred2 = pred.copy()
    pred2[gt == 2] = 2  # class 2 found in case b
    table.add("b", evaluate_case(pred2, gt, 5, mode="strict"))
    s = table.summary()
    assert s["mode"] == "strict" and s["hd_method"] == "medpy" and "NaN" in s["policy"]
    c2 = s["classes"]["2"]
    assert c2["hd95"]["excluded"] == 1 and c2["hd95"]["n"] == 1
    assert c2["asd"]["excluded"] == 1
    assert c2["n_missed"] == 1 and c2["n_spurious"] == 0
    assert c2["hd95"]["mean"] == pytest.approx(0.0)  # found exactly in case b; NaN of case a excluded
    assert c2["dice"]["excluded"] == 0 and c2["dice"]["mean"] == pytest.approx(0.5)
    c3 = s["classes"]["3"]
    assert c3["hd95"]["excluded"] == 2 and c3["n_spurious"] == 2 and math.isnan(c3["hd95"]["mean"])
    c4 = s["classes"]["4"]
    assert c4["hd95"]["excluded"] == 2 and c4["n_both_empty"] == 2 and c4["dice"]["mean"] == 1.0
    # the average skips classes without any distance value
    assert s["average"]["hd95"]["n_classes"] == 2
    md = table.to_markdown()
    assert "excluded (NaN) values: HD95 5, ASD 5" in md


def _manual_table() -> MetricTable:
    """Two cases, two classes with easy numbers.

    dice: class 1 = 0.8, 0.6 (mean 0.7, std 0.1); class 2 = 0.4, 0.2 (mean 0.3, std 0.1)
    hd95: class 1 = 2, 4 (3 ± 1);                  class 2 = 10, 20 (15 ± 5)
    average dice = (0.7 + 0.3) / 2 = 0.5; per-case class means 0.6, 0.4 -> std 0.1
    average hd95 = (3 + 15) / 2 = 9;      per-case class means 6, 12 -> std 3
    """
    t = MetricTable(mode="paper", hd_method="medpy", class_names=["liver", "spleen"])
    flags = {"gt_empty": False, "pred_empty": False}
    t.add(
        "case1",
        [{"class": 1, "dice": 0.8, "hd95": 2.0, **flags}, {"class": 2, "dice": 0.4, "hd95": 10.0, **flags}],
        fold=0,
    )
    t.add(
        "case2",
        [{"class": 1, "dice": 0.6, "hd95": 4.0, **flags}, {"class": 2, "dice": 0.2, "hd95": 20.0, **flags}],
        fold=0,
    )
    return t


def test_summary_mean_std() -> None:
    s = _manual_table().summary()
    assert s["num_cases"] == 2 and s["metrics"] == ["dice", "hd95"]
    c1, c2 = s["classes"]["1"], s["classes"]["2"]
    assert c1["name"] == "liver" and c2["name"] == "spleen"
    assert (c1["dice"]["mean"], c1["dice"]["std"]) == pytest.approx((0.7, 0.1))
    assert (c2["dice"]["mean"], c2["dice"]["std"]) == pytest.approx((0.3, 0.1))
    assert (c1["hd95"]["mean"], c1["hd95"]["std"]) == pytest.approx((3.0, 1.0))
    assert (c2["hd95"]["mean"], c2["hd95"]["std"]) == pytest.approx((15.0, 5.0))
    assert (s["average"]["dice"]["mean"], s["average"]["dice"]["std"]) == pytest.approx((0.5, 0.1))
    assert (s["average"]["hd95"]["mean"], s["average"]["hd95"]["std"]) == pytest.approx((9.0, 3.0))


def test_csv_json_markdown_round_trip(tmp_path) -> None:
    t = _manual_table()
    csv_path = t.to_csv(tmp_path / "out" / "metrics.csv")
    json_path = t.to_json(tmp_path / "out" / "summary.json")
    assert csv_path.exists() and json_path.exists()
    assert sorted(os.listdir(tmp_path / "out")) == ["metrics.csv", "summary.json"]  # no temp files left

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0]) == ["case", "class", "class_name", "dice", "hd95", "gt_empty", "pred_empty", "fold"]
    assert rows[1]["case"] == "case1" and rows[1]["class_name"] == "spleen" and float(rows[1]["hd95"]) == 10.0
    assert float(rows[2]["dice"]) == 0.6

    back = MetricTable.from_csv(csv_path)
    assert back.rows == t.rows
    assert back.summary()["classes"] == t.summary()["classes"]

    summary = json.loads(json_path.read_text())
    assert summary["classes"]["1"]["dice"]["mean"] == pytest.approx(0.7)
    assert summary["average"]["hd95"]["mean"] == pytest.approx(9.0)
    assert summary["mode"] == "paper"

    md = t.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| Metric | Average | liver | spleen |"
    assert lines[2] == "| Dice (%) | 50.00 ± 10.00 | 70.00 ± 10.00 | 30.00 ± 10.00 |"
    assert lines[3] == "| HD95 (voxel) | 9.00 ± 3.00 | 3.00 ± 1.00 | 15.00 ± 5.00 |"
    assert "mode: paper" in md and "pooled P95 (medpy)" in md
    md2 = t.to_markdown(class_names={1: "L", 2: "S"}, metrics=["hd95"], percent=False, digits=1)
    assert md2.splitlines()[0] == "| Metric | Average | L | S |"
    assert md2.splitlines()[2] == "| HD95 (voxel) | 9.0 ± 3.0 | 3.0 ± 1.0 | 15.0 ± 5.0 |"
    with pytest.raises(ValueError, match="class_names"):
        t.to_markdown(class_names=["only one"])


def test_json_is_strict_with_nan(tmp_path) -> None:
    pred, gt = _four_situations()
    t = MetricTable(mode="strict")
    t.add("a", evaluate_case(pred, gt, 5, mode="strict"))
    path = t.to_json(tmp_path / "s.json")

    def reject(token: str) -> float:
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads(path.read_text(), parse_constant=reject)
    assert summary["classes"]["4"]["hd95"]["mean"] is None
    t.to_csv(tmp_path / "m.csv")
    back = MetricTable.from_csv(tmp_path / "m.csv", mode="strict")
    assert math.isnan(back.rows[3]["hd95"])


def _organ_tumour() -> tuple[np.ndarray, np.ndarray]:
    """4x6, labels 1 (organ) and 2 (tumour): gt a 2x2 organ next to a 2x2 tumour; pred overlaps both."""
    gt = np.zeros((4, 6), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[0:2, 0:2] = 1
    gt[0:2, 2:4] = 2
    pred[0] = [1, 2, 2, 0, 0, 0]
    pred[1] = [1, 1, 1, 0, 0, 0]
    return pred, gt


def test_label_group_scores_the_union_by_hand(tmp_path) -> None:
    pred, gt = _organ_tumour()
    groups = {"organ_and_tumour": [1, 2], "tumour_only": [2]}
    rows = _by_class(evaluate_case(pred, gt, num_classes=3, metrics=ALL, label_groups=groups))
    assert sorted(rows) == [1, 2, 3, 4] and rows[3]["group"] == "organ_and_tumour" and "group" not in rows[1]
    # per label: organ 3 of 4 right each way; tumour 1 overlap of |P| = 2, |G| = 4
    assert (rows[1]["dice"], rows[1]["precision"], rows[1]["recall"]) == pytest.approx((0.75, 0.75, 0.75))
    assert (rows[2]["dice"], rows[2]["precision"], rows[2]["recall"]) == pytest.approx((1 / 3, 1 / 2, 1 / 4))
    # union: |P| = 6 inside |G| = 8 -> DSC 12/14, PPV 1, sensitivity 6/8, no false positive
    u = rows[3]
    assert (u["dice"], u["iou"], u["precision"], u["recall"]) == pytest.approx((6 / 7, 6 / 8, 1.0, 0.75))
    assert u["specificity"] == 1.0 and u["hd95"] == pytest.approx(hd95(pred > 0, gt > 0))
    assert u["hd"] == pytest.approx(1.0)  # gt columns 3 are one voxel from the prediction
    assert {k: v for k, v in rows[4].items() if k != "group"} == {**rows[2], "class": 4}
    with pytest.raises(ValueError, match=r"label group 'bad': labels \[0, 1\] must be foreground labels in 1\.\.2"):
        evaluate_case(pred, gt, num_classes=3, label_groups={"bad": [0, 1]})
    # tables: the group is a named column, left out of the average over labels
    t = MetricTable()
    t.add("a", evaluate_case(pred, gt, 3, label_groups={"organ_and_tumour": [1, 2]}))
    s = t.summary()
    assert s["classes"]["3"]["name"] == "organ_and_tumour" and s["classes"]["3"]["group"] is True
    assert s["average"]["dice"]["mean"] == pytest.approx((0.75 + 1 / 3) / 2)
    md = t.to_markdown(["organ", "tumour"])
    assert md.splitlines()[0] == "| Metric | Average | organ | tumour | organ_and_tumour |"
    assert "85.71 ± 0.00" in md and "label groups (not in Average): organ_and_tumour" in md
    t.to_csv(tmp_path / "m.csv")
    back = MetricTable.from_csv(tmp_path / "m.csv")
    assert back.summary()["classes"]["3"]["dice"]["mean"] == pytest.approx(6 / 7)
    assert back.summary()["average"]["dice"]["mean"] == pytest.approx(s["average"]["dice"]["mean"])
