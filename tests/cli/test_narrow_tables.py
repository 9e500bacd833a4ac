"""Tables at 80 columns never cut a name or a number (issue #16 item 7): evaluate, compare, stats, recipes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import _first_sentence, app
from medseg.config import load_config, recipe_names

NARROW = {"COLUMNS": "80"}
CLASSES = ["background", "left_kidney_cortex", "right_kidney_cortex", "gallbladder", "inferior_vena_cava",
           "portal_splenic_vein", "pancreas_head"]


def _cells(markdown: str) -> list[str]:
    """Every cell of every table in ``markdown`` (separator rows left out)."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            out += [c.strip() for c in line.strip().strip("|").split("|") if c.strip()]
    return out


def _assert_whole(markdown: str, output: str) -> None:
    cells = _cells(markdown)
    assert cells
    missing = [c for c in cells if c not in output]
    assert not missing, f"cut or missing: {missing[:5]}\n{output}"
    assert "…" not in output
    assert max(len(line) for line in output.splitlines()) <= 80, output


def _masks(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(3):
        m = np.zeros((24, 24), np.uint8)
        for c in range(1, len(CLASSES)):
            y, x = rng.integers(0, 20, 2)
            m[y : y + 4, x : x + 4] = c
        Image.fromarray(m).save(folder / f"case{i}.png")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> list[Path]:
    """Two evaluations (of two prediction folders) of the same 7-class reference masks, 80 columns wide."""
    root = tmp_path_factory.mktemp("narrow")
    _masks(root / "truth", 0)
    outs = []
    for k in (1, 2):
        _masks(root / f"pred{k}", k)
        out = root / f"eval{k}"
        res = CliRunner().invoke(app, ["evaluate", "--pred", str(root / f"pred{k}"), "--truth", str(root / "truth"),
                                       "--out", str(out), "--set", f"data.class_names={CLASSES}"], env=NARROW)
        assert res.exit_code == 0, res.output
        outs.append((out, res.output))
    return outs


def test_evaluate_table_and_files_use_whole_names_and_numbers(evaluated):
    out, output = evaluated[0]
    _assert_whole((out / "table.md").read_text(), output)
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["class_name"] for r in rows[:6]] == CLASSES[1:]  # names, as the table (before: "class 1", ...)
    s = json.loads((out / "summary.json").read_text())
    assert [s["classes"][str(c)]["name"] for c in range(1, 7)] == CLASSES[1:]


def test_compare_table_is_whole_at_80_columns(evaluated, tmp_path):
    (a, _), (b, _) = evaluated
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")], env=NARROW)
    assert res.exit_code == 0, res.output
    _assert_whole((tmp_path / "cmp" / "compare.md").read_text(), res.output)
    assert "inferior_vena_cava" in res.output


def test_stats_table_is_whole_at_80_columns(monkeypatch, tmp_path):
    import medseg.stats

    def fake(name, **_):
        return {"model": name, "size": (352, 352), "in_channels": 3, "out_channels": 1, "params_trainable": 29_123_456,
                "paper_params": 29_700_000, "paper_kind": "official code", "paper_params_ours_expected": 29_123_456,
                "gmacs": 17.654, "gmacs_literal": 21.123, "paper_gmacs": 17.7, "paper_gmacs_size": (352, 352),
                "latency_ms": 266.4, "throughput_ips": 4.25, "batch": 4, "peak_mem_mb": 1234.0, "gflops": 132.5,
                "matmul_gflops": 160.25, "matmul_ratio": 0.83, "device": "cpu", "device_name": "AMD EPYC",
                "matmul_dtype": "float32", "matmul_n": 2048, "amp": None, "channels_last": True, "fast": True,
                "compile": False, "peak_mem_note": "tracemalloc"}

    monkeypatch.setattr(medseg.stats, "model_stats", fake)
    out = tmp_path / "stats.md"
    res = CliRunner().invoke(app, ["stats", "--models", "m2snet,attention_unet", "--out", str(out)], env=NARROW)
    assert res.exit_code == 0, res.output
    output = res.output.split("measuring attention_unet ...", 1)[1]
    _assert_whole(out.read_text(), output)
    assert output.count("29,123,456") >= 2


def test_recipes_at_80_columns_cut_no_word():
    res = CliRunner().invoke(app, ["recipes"], env=NARROW)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()[1:]
    assert [line.split()[0] for line in lines] == recipe_names()
    for name, line in zip(recipe_names(), lines):
        assert len(line) <= 80
        shown = re.sub(r"\s*…\s*$", "", line[len(name):].strip())
        full = _first_sentence(load_config(name).description)
        assert full.startswith(shown) and (len(shown) == len(full) or full[len(shown)] == " "), (shown, full)
