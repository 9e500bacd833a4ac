"""Honest evaluation (issue #14 items 11-13): the empty-mask rule follows the protocol, evaluation
folders carry their settings, pooled aggregation and class groups, checked by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.config import Config, ConfigError, load_config, resolve_mode, validate
from medseg.data.readers import build_reader
from medseg.engine.evaluate import eval_tag, evaluate_split, prepare_eval_dir
from medseg.metrics import class_group_means, confusion_counts, pooled_summary
from medseg.utils import MedsegError


def test_auto_mode_is_paper_for_volumes_and_strict_per_image() -> None:
    assert resolve_mode("auto", "volume") == "paper"
    assert resolve_mode("auto", "image") == resolve_mode("auto", "polyp") == "strict"
    assert resolve_mode("auto", "auto", volume=True) == "paper"
    assert resolve_mode("auto", "auto", volume=False) == "strict"
    assert resolve_mode("paper", "image") == "paper" and resolve_mode("strict", "volume") == "strict"
    assert Config().eval.mode == "auto"


@pytest.mark.parametrize(("recipe", "mode"), [("quickstart", "strict"), ("unet_kvasir", "strict"),
                                              ("m2snet_polyp", "strict"), ("snet_monuseg", "strict"),
                                              ("snet_synapse", "paper"), ("mgrad_unet_acdc", "paper"),
                                              ("mda_unet_kits", "paper")])
def test_recipes_resolve_the_rule_of_their_protocol(recipe: str, mode: str) -> None:
    ev = load_config(recipe).eval
    assert resolve_mode(ev.mode, ev.protocol) == mode


def test_validation_uses_the_resolved_rule() -> None:
    from medseg.engine.task import SegTask

    cfg = validate({"model": {"name": "unet", "kwargs": {"features": [4, 4, 4, 4, 4, 4]}}})
    task = SegTask(cfg)
    assert cfg.eval.mode == "auto" and task.val_mode == "strict"  # 2D validation cases
    task._val_volumes = True
    assert task.val_mode == "paper"  # volumes regrouped by case: the volume protocol's rule
    assert SegTask(validate({**cfg.to_dict(), "eval": {"mode": "paper"}})).val_mode == "paper"


def test_eval_tag_carries_protocol_mode_tta_and_aggregate() -> None:
    assert eval_tag("volume", "paper") == "volume-paper"
    assert eval_tag("image", "strict", tta=True) == "image-strict-tta"
    assert eval_tag("volume", "paper", aggregate="pooled") == "volume-paper-pooled"


def test_reused_folder_warns_and_keeps_only_this_evaluations_files(tmp_path: Path, caplog) -> None:
    out = tmp_path / "ev"
    (out / "Kvasir").mkdir(parents=True)
    for name in ("table.md", "polyp.csv", "summary.json", "notes.txt"):
        (out / name).write_text("old")
    (out / "Kvasir" / "table.md").write_text("old")
    with caplog.at_level(logging.WARNING):
        prepare_eval_dir(out)
    assert sum("already holds evaluation results" in r.message for r in caplog.records) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's own file stays
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_eval_dir(out)  # nothing of an evaluation left: no warning
    assert not caplog.records
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(MedsegError, match="run folder"):
        prepare_eval_dir(tmp_path / "run")


def _three_class_folder(root: Path) -> None:
    """Two 8x8 label maps (classes 1, 2, 3) in image_folder layout; split ``test``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / f"{i}.png")
        lab = np.zeros((8, 8), np.uint8)
        lab[0:4, 0:4] = 1  # 16 px
        lab[4:8, 4:6] = 2 if i == 0 else 0  # 8 px on case 0 only
        lab[0:2, 6:8] = 3  # 4 px
        Image.fromarray(lab).save(root / "masks" / f"{i}.png")
    (root / "splits" / "test.txt").write_text("0\n1\n")


class KnownPredictor:
    """Class 1 right on case 0, only its top half (8 of 16 px) on case 1; class 2 never predicted;
    class 3 exact."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def predict_case(self, case):
        pred = case.label.copy()
        pred[pred == 2] = 0
        if case.id == "1":
            pred[2:4, 0:4] = 0
        return pred, np.zeros((4,) + pred.shape, np.float32)


def _cfg(root: Path, **ev) -> Config:
    return validate({"data": {"root": str(root), "num_classes": 4, "class_names": ["bg", "a", "b", "c"]},
                     "eval": {"protocol": "image", "mode": "strict", **ev}})


def test_pooled_and_per_case_dice_by_hand(tmp_path: Path) -> None:
    _three_class_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", aggregate="pooled", label_groups={"ab": [1, 2]})
    reader = build_reader(cfg.data)
    s = evaluate_split(KnownPredictor(cfg), reader, ["0", "1"], split="test", mode="strict", protocol="image",
                       out=tmp_path / "out")
    # per case: class 1 Dice 1 and 2*8/(8+16) = 2/3; pooled: 2*24/(24+32) = 6/7
    assert s["classes"]["1"]["dice"]["mean"] == pytest.approx((1 + 2 / 3) / 2)
    pooled = s["pooled"]["classes"]
    assert pooled["1"]["dice"]["mean"] == pytest.approx(6 / 7)
    assert (pooled["1"]["tp"], pooled["1"]["fp"], pooled["1"]["fn"]) == (24, 0, 8)
    # class 2: per case 0 (missed) and 1 (both empty, strict); pooled 0 (8 px missed in all)
    assert s["classes"]["2"]["dice"]["mean"] == pytest.approx(0.5) and pooled["2"]["dice"]["mean"] == 0.0
    assert pooled["4"]["name"] == "ab" and pooled["4"]["group"]  # the label group, not in the average
    assert pooled["4"]["dice"]["mean"] == pytest.approx(2 * 24 / (24 + 40))
    assert s["pooled"]["average"]["dice"]["mean"] == pytest.approx((6 / 7 + 0 + 1) / 3)
    assert s["aggregate"] == "pooled" and s["mode"] == "strict" and s["protocol"] == "image" and s["tta"] is False
    row = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert row[0].startswith("| Dice (%, pooled) |") and row[2].startswith(f"| {100 * (6 / 7 + 1) / 3:.2f} |")
    assert "| precision |" in (tmp_path / "out" / "table.md").read_text()


def test_class_groups_are_means_of_class_scores(tmp_path: Path) -> None:
    _three_class_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", class_groups=[{"name": "small", "labels": [2, 3]}, {"name": "large", "labels": [1]}])
    s = evaluate_split(KnownPredictor(cfg), build_reader(cfg.data), ["0", "1"], split="test", mode="strict",
                       protocol="image", out=tmp_path / "out")
    assert s["class_groups"]["small"]["dice"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["class_groups"]["large"]["dice"]["mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["class_groups"]["small"]["labels"] == [2, 3]
    head, _, cells = (tmp_path / "out" / "table.md").read_text().splitlines()[:3]
    assert head.split(" | ")[-2:] == ["small Dice", "large Dice |"]
    assert cells.split(" | ")[-2:] == ["75.00", f"{100 * 5 / 6:.2f} |"]


def test_counts_and_group_means_units() -> None:
    pred = np.array([[1, 1, 2, 0]])
    gt = np.array([[1, 2, 2, 0]])
    c = confusion_counts(pred, gt, 3, {"fg": [1, 2]})
    assert c[1].tolist() == [1, 1, 0, 2] and c[2].tolist() == [1, 0, 1, 2] and c[3].tolist() == [3, 0, 0, 1]
    p = pooled_summary(c, {1: "a", 2: "b", 3: "fg"}, groups=[3])
    assert p["average"]["dice"]["mean"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    g = class_group_means(p["classes"], {"both": [1, 2]})
    assert g["both"]["dice"]["mean"] == pytest.approx(2 / 3) and g["both"]["precision"]["mean"] == pytest.approx(0.75)


def test_class_groups_are_checked_against_the_classes() -> None:
    with pytest.raises(ConfigError, match="class_groups 'x': label 9"):
        validate({"data": {"num_classes": 4}, "eval": {"class_groups": {"x": [9]}}})
    with pytest.raises(ConfigError, match="used twice"):
        validate({"eval": {"class_groups": [{"name": "a", "labels": [1]}, {"name": "a", "labels": [1]}]}})


def test_snet_synapse_groups_give_table_5(tmp_path: Path) -> None:
    """Table 1's SNet per-organ Dice, grouped as the recipe groups them, gives Table 5's 90.19 / 77.01 / 88.73."""
    cfg = load_config("snet_synapse")
    names = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "pancreas", "liver",
             "stomach", "aorta"]
    table1 = {"aorta": 90.19, "gallbladder": 69.48, "left_kidney": 87.48, "right_kidney": 84.09,
              "pancreas": 66.99, "liver": 95.58, "spleen": 89.99, "stomach": 80.61}
    classes = {str(c): {"dice": {"mean": table1[n]}} for c, n in enumerate(names) if c}
    groups = class_group_means(classes, {g.name: g.labels for g in cfg.eval.class_groups})
    assert {k: round(v["dice"]["mean"], 2) for k, v in groups.items()} == {"tissue": 90.19, "small": 77.01,
                                                                          "large": 88.73}
    assert load_config("snet_acdc").eval.class_groups == [] and load_config("snet_monuseg").eval.class_groups == []


def test_summary_json_records_the_settings(tmp_path: Path) -> None:
    _three_class_folder(tmp_path / "d")
    cfg = _cfg(tmp_path / "d", mode="auto", protocol="auto")
    s = evaluate_split(KnownPredictor(cfg), build_reader(cfg.data), ["0"], split="test", mode="auto",
                       protocol="auto", out=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (s["protocol"], s["mode"]) == ("image", "strict")
    assert {k: saved[k] for k in ("split", "protocol", "mode", "tta", "aggregate")} == {
        "split": "test", "protocol": "image", "mode": "strict", "tta": False, "aggregate": "case"}
