"""`medseg compare`: paired statistics against scipy on a fixed table, seeds, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from medseg.cli import app
from medseg.experiments.compare import compare, paired_stats

runner = CliRunner()

CASES = [f"case{i:02d}" for i in range(12)]
BASE = np.array([0.80, 0.75, 0.90, 0.60, 0.85, 0.70, 0.95, 0.65, 0.88, 0.72, 0.81, 0.77])
DIFF = np.array([0.05, 0.02, -0.01, 0.10, 0.00, 0.04, 0.01, 0.08, -0.03, 0.06, 0.03, 0.02])


def write_eval(folder: Path, dice: np.ndarray, *, mode: str = "strict", cases: list[str] = CASES) -> Path:
    """An evaluation folder as `medseg evaluate` writes it: class 1 = dice, class 2 = dice / 2."""
    folder.mkdir(parents=True)
    lines = ["case,class,class_name,dice,gt_empty,pred_empty"]
    for case, v in zip(cases, dice):
        lines += [f"{case},1,liver,{float(v)!r},False,False", f"{case},2,kidney,{float(v) / 2!r},False,False"]
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({"split": "test", "protocol": "image", "mode": mode}))
    return folder


def test_paired_stats_equal_scipy_on_a_fixed_table():
    r = paired_stats(BASE, BASE + DIFF, seed=7)
    d = (BASE + DIFF) - BASE
    ref = stats.bootstrap((d,), np.mean, n_resamples=10_000, confidence_level=0.95, method="BCa",
                          rng=np.random.default_rng(7))
    assert r["ci"] == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high], abs=1e-12)
    assert r["p"] == pytest.approx(stats.wilcoxon(d).pvalue, abs=1e-12)
    assert r["mean_diff"] == pytest.approx(DIFF.mean())
    assert (r["win"], r["tie"], r["loss"], r["n"]) == (9, 1, 2, 12)
    assert r["ci"][0] < DIFF.mean() < r["ci"][1]


def test_paired_stats_hand_checked_small_case():
    """d = 1..5, all positive: the exact two-sided signed-rank p is 2 / 2^5; distances: lower wins."""
    base = np.zeros(5)
    r = paired_stats(base, np.arange(1.0, 6.0), lower_is_better=True)
    assert r["p"] == pytest.approx(2 / 32)
    assert (r["win"], r["tie"], r["loss"]) == (0, 0, 5) and r["mean_diff"] == 3.0
    same = paired_stats(base, base + 0.0)  # no difference at all: p = 1, CI a point
    assert same["p"] == 1.0 and same["ci"] == [0.0, 0.0] and same["tie"] == 5
    nan = paired_stats(np.array([1.0, np.nan, 0.5]), np.array([1.0, 0.2, np.nan]))
    assert nan["n"] == 1 and nan["excluded"] == 2


def test_compare_cli_writes_table_json_png_and_summarises_seeds(tmp_path):
    a = write_eval(tmp_path / "a", BASE)
    b1 = write_eval(tmp_path / "b1", BASE + DIFF)
    b2 = write_eval(tmp_path / "b2", BASE + DIFF + 0.02)
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(a), f"{b1},{b2}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.json", "compare.png"}
    result = json.loads((out / "compare.json").read_text())
    rows = {(r["class"], r["seeds"]): r for r in result["rows"]}
    b = rows[("1", 2)]  # seeds: mean ± sd over the two runs' means; paired on each case's mean over seeds
    assert b["mean"] == pytest.approx((BASE + DIFF + 0.01).mean())
    assert b["sd"] == pytest.approx(np.std([(BASE + DIFF).mean(), (BASE + DIFF + 0.02).mean()], ddof=1))
    assert b["mean_diff"] == pytest.approx((DIFF + 0.01).mean())
    mean_row = rows[("mean", 2)]  # per-case mean over classes 1 and 2: 0.75 x the class-1 difference
    assert mean_row["mean_diff"] == pytest.approx(0.75 * (DIFF + 0.01).mean())
    md = (out / "compare.md").read_text()
    assert "Wilcoxon p" in md and "| b1+b2 (2 seeds) | 82.25 ± 1.41 | 4.08 |" in md and "Wilcoxon p" in res.output


def test_compare_reads_a_run_folders_evaluation(tmp_path):
    a = write_eval(tmp_path / "runA" / "eval" / "test-image-strict", BASE)
    b = write_eval(tmp_path / "runB" / "eval" / "test-image-strict", BASE + DIFF)
    result = compare([[tmp_path / "runA"], [tmp_path / "runB"]], n_resamples=1000)
    assert result["eval_dirs"] == [[str(a)], [str(b)]]


@pytest.mark.parametrize("kind", ["mode", "cases", "no-eval"])
def test_compare_refuses_runs_that_do_not_pair(tmp_path, kind):
    a = write_eval(tmp_path / "a", BASE)
    if kind == "mode":
        b = write_eval(tmp_path / "b", BASE, mode="paper")
    elif kind == "cases":
        b = write_eval(tmp_path / "b", BASE[:-1], cases=CASES[:-1])
    else:
        b = tmp_path / "b"
        b.mkdir()
    res = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "cmp").exists()
