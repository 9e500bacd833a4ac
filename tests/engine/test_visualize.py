"""Pictures and the model card: overlay titles and legends, contour visibility on red, curves.png from a
Lightning metrics.csv, per-class validation Dice, and the README.md card's sections and evaluation blocks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.engine.visualize import (
    CLASS_COLOURS,
    best_epoch,
    cases_figure,
    epoch_rows,
    legend_labels,
    overlay_panel,
    overlay_title,
    per_class_dice,
    plot_curves,
    save_figure,
)

NAMES = ["background", "liver", "tumour", "vessel"]


def test_title_has_the_id_and_each_class_dice_by_hand() -> None:
    truth = np.zeros((6, 6), np.int64)
    pred = np.zeros((6, 6), np.int64)
    truth[0, :4] = 1  # liver: 4 true pixels, 2 of them predicted, no false positive: Dice 2*2/(2+4)
    pred[0, :2] = 1
    truth[5, 5] = 2  # tumour: missed: Dice 0; vessel: absent from both: left out
    dice = per_class_dice(pred, truth, NAMES)
    assert dice == pytest.approx({"liver": 2 / 3, "tumour": 0.0})
    assert overlay_title("case_7", dice) == "case_7 — Dice liver 0.667, tumour 0.000 (mean 0.333)"
    assert overlay_title("case_7", {"liver": 0.5}) == "case_7 — Dice liver 0.500"
    assert overlay_title("case_7") == "case_7"
    assert overlay_title("case_7", {}) == "case_7 — no foreground in truth or prediction"


def test_legend_names_every_foreground_class_in_order_with_distinct_colours() -> None:
    labels = legend_labels(NAMES)
    assert [n for n, _ in labels] == ["liver", "tumour", "vessel"]
    assert [c for _, c in labels] == list(CLASS_COLOURS[:3])
    assert len(set(CLASS_COLOURS)) == len(CLASS_COLOURS)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def test_polyp_contour_is_visible_on_red_mucosa() -> None:
    """A red image with a red polyp: the class-1 contour (yellow, black outline) is drawn, and far from red."""
    image = np.zeros((3, 64, 64), np.float32)
    image[0], image[1], image[2] = 0.8, 0.15, 0.15
    yy, xx = np.mgrid[:64, :64]
    polyp = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15 ** 2).astype(np.int64)
    image[0] += 0.1 * polyp  # barely redder than the mucosa
    panel = overlay_panel(image, polyp, polyp, 2, class_names=["background", "polyp"], case_id="cju0qkwl35piu0993l0dewei2")
    assert panel.dtype == np.uint8 and panel.shape[0] >= 400 and panel.shape[1] >= 1000  # readable size
    yellow = _rgb(CLASS_COLOURS[0])
    near = np.abs(panel.astype(int) - yellow).sum(-1) < 60
    third = panel.shape[1] // 3
    # contour pixels in the truth and prediction panels, none in the plain image panel
    assert near[:, third:2 * third].sum() > 200 and near[:, 2 * third:].sum() > 200
    assert near[:, : third - 10].sum() < 20  # only the legend's line
    assert np.abs(yellow - np.array([204, 38, 38])).sum() > 250  # far from the red of the tissue


def _write_lightning_csv(path: Path) -> None:
    """metrics.csv as Lightning's CSVLogger writes it: a validation row and a training row per epoch."""
    path.write_text(
        "epoch,step,train/epoch_s,train/loss_epoch,train/lr,val/dice,val/dice/liver,val/dice/tumour,val/loss\n"
        "0,1,,,,0.40,0.60,0.20,1.30\n"
        "0,1,12.5,1.20,0.003,,,,\n"
        "1,3,,,,0.55,0.70,0.40,1.10\n"
        "1,3,11.0,1.00,0.0015,,,,\n"
        "2,5,,,,0.50,0.75,0.25,1.20\n"
        "2,5,11.2,0.90,0.0,,,,\n")


def test_epoch_rows_merge_lightning_rows_and_the_best_epoch(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    _write_lightning_csv(csv)
    rows = epoch_rows(csv)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[1] == {"epoch": 1, "step": 3, "train/epoch_s": 11.0, "train/loss_epoch": 1.0, "train/lr": 0.0015,
                       "val/dice": 0.55, "val/dice/liver": 0.7, "val/dice/tumour": 0.4, "val/loss": 1.1}
    assert best_epoch(rows, "dice") == 1 and best_epoch(rows, "loss") == 1
    assert best_epoch([{"epoch": 0.0, "train/loss_epoch": 1.0}]) is None
    assert best_epoch([{"epoch": 0.0, "val/dice": 0.5}, {"epoch": 1.0, "val/dice": 0.5}]) == 0  # first of a tie


def test_curves_png_is_a_sane_png(tmp_path: Path) -> None:
    _write_lightning_csv(tmp_path / "metrics.csv")
    out = plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png", "dice", "run", NAMES[:3])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1000, 700)
        assert np.asarray(im.convert("L")).std() > 10  # not blank
    assert plot_curves(tmp_path / "missing.csv", tmp_path / "x.png") is None and not (tmp_path / "x.png").exists()


def test_cases_box_plot_png(tmp_path: Path) -> None:
    fig = cases_figure({"liver": [0.9, 0.8, float("nan")], "tumour": [0.1, 0.5, 0.3]}, title="test")
    path = save_figure(fig, tmp_path / "cases.png")
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        assert im.format == "PNG" and im.size[0] >= 400
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["liver\n(n=2)", "tumour\n(n=3)"]  # NaN left out of the count


def test_validation_dice_per_class_by_hand() -> None:
    from medseg.engine.task import case_dice, class_dice

    # two cases x two classes: (intersection, predicted, true, all)
    counts = torch.tensor([[[2, 2, 4, 16], [0, 0, 0, 16]],
                           [[1, 1, 1, 16], [0, 3, 0, 16]]])
    # liver: (2*2/6 + 1) / 2; tumour strict: (both empty 1 + pred only 0) / 2, paper: (pred empty 0 + absent class 1) / 2
    assert class_dice(counts, "strict").tolist() == pytest.approx([(2 / 3 + 1) / 2, 0.5])
    assert class_dice(counts, "paper").tolist() == pytest.approx([(2 / 3 + 1) / 2, 0.5])
    assert case_dice(counts, "strict") == pytest.approx(((2 / 3 + 1) / 2 + 0.5) / 2)


# -- model card ---------------------------------------------------------------------------------
@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    from medseg.config import load_config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config("quickstart"), run / "config.yaml")
    (run / "summary.json").write_text(json.dumps({
        "recipe": "quickstart", "model": "snet", "params": 1000, "epochs": 3, "steps": 30, "train_seconds": 12.0,
        "device": "cpu", "val_metric": "dice", "best_val": 0.61, "best_checkpoint": "checkpoints/best.ckpt",
        "checkpoint_bytes": {"best": 2_000_000}, "status": "completed", "data": {"train_cases": 17, "val_cases": 3}}))
    return run


def test_model_card_sections(fake_run: Path) -> None:
    from medseg.engine.model_card import MARKER, write_model_card

    text = write_model_card(fake_run).read_text()
    assert text.splitlines()[0] == MARKER
    for section in ("## Data", "## Recipe", "## Training", "## Metrics and their rules", "## Intended use and limits",
                    "## Evaluation"):
        assert section in text, section
    assert "docs/protocols/quickstart.md" in text
    assert "17 training" in text and "3 validation" in text and "17 training cases" in text
    assert "liver, spleen, kidney" in text and "best validation dice: 0.6100" in text
    assert "**Not for clinical use**" in text and "`strict`" in text and "Not evaluated yet" in text


def test_model_card_evaluation_blocks_add_and_replace(fake_run: Path) -> None:
    from medseg.engine.model_card import evaluation_block, write_model_card

    def summary(dice: float) -> dict:
        return {"split": "test", "protocol": "image", "mode": "strict", "cases": 4, "class_names": NAMES[:3],
                "average": {"dice": {"mean": dice}, "iou": {"mean": 0.5}, "hd95": {"mean": 3.0}},
                "classes": {"1": {"dice": {"mean": dice}}, "2": {"dice": {"mean": 0.25}}}}

    out = fake_run / "eval" / "test-image-strict"
    write_model_card(fake_run, ("eval/test-image-strict", evaluation_block("eval/test-image-strict", summary(0.8), out, fake_run)))
    write_model_card(fake_run, ("eval/test-image-paper", evaluation_block("eval/test-image-paper", summary(0.7), out, fake_run)))
    text = write_model_card(fake_run, ("eval/test-image-strict",
                                       evaluation_block("eval/test-image-strict", summary(0.9), out, fake_run))).read_text()
    assert text.count("### eval/test-image-strict") == 1 and text.count("### eval/test-image-paper") == 1
    assert "mean Dice 90.00 %" in text and "mean Dice 80.00 %" not in text and "mean Dice 70.00 %" in text
    assert "Dice per class (%): liver 90.00, tumour 25.00" in text and "Not evaluated yet" not in text
    # training rewrites the card and keeps the evaluation blocks
    assert "mean Dice 90.00 %" in write_model_card(fake_run).read_text()


def test_model_card_never_touches_a_users_readme(fake_run: Path) -> None:
    from medseg.engine.model_card import write_model_card

    (fake_run / "README.md").write_text("# my notes\n")
    assert write_model_card(fake_run) is None
    assert (fake_run / "README.md").read_text() == "# my notes\n"
