"""`medseg reproduce`: a tiny 2-row grid end to end (table, paired statistics, skip and resume on the
next call, a failing row reported), the real tables' plans, --list and --dry-run."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from scipy import stats
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import load_config
from medseg.data.builtin import generate
from medseg.engine.safety import GracefulStop, TrainingInterrupted
from medseg.experiments import reproduce as rp
from medseg.experiments.tables import BUDGETS, TABLES, Column, Row, Table

runner = CliRunner()

TINY = Table(
    name="tiny",
    title="Tiny U-Nets",
    source="a test table",
    recipe="quickstart",
    sets=("data.size=[64,64]", "data.batch_size=16", "model.name=unet", "model.kwargs={features: [4, 8, 8, 16, 16, 4]}",
          "loss.terms=[{loss: dice_ce, output: logits}]", "trainer.max_epochs=2", "trainer.progress=false",
          "trainer.overlays=0"),
    columns=(Column("avg:dice", "Dice"), Column("avg:hd95", "HD95", percent=False)),
    rows=(
        Row("small", "U-Net 4", (), {"avg:dice": 50.0}),
        Row("wide", "lr 0.01", ("optim.lr=0.01",)),
        Row("broken", "broken", ("model.kwargs={features: [4]}",)),  # the model cannot be built: a failed row
    ),
    baseline="small",
    budgets={"cpu-small": ("trainer.max_time_s=120",), "paper": ()},
)


class Count(Callback):
    """Counts training starts (new and resumed runs) by run folder name."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.started.append(Path(trainer.default_root_dir).name)


class InterruptOnce(Callback):
    """Asks medseg's GracefulStop to stop run ``name`` after its first epoch, as Ctrl-C does."""

    def __init__(self, name: str) -> None:
        self.name, self.fired = name, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.fired and Path(trainer.default_root_dir).name == self.name:
            next(c for c in trainer.callbacks if isinstance(c, GracefulStop)).signum = signal.SIGINT
            self.fired = True


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The tiny grid (one step per epoch) with 2 seeds: interrupted in wide-seed0, then called again (resume), then a third time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny U-Nets gain nothing from 2 threads, and lose 10x on a busy shared CPU
    try:
        return _run_grid(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _run_grid(tmp_path_factory) -> dict:
    data = generate("phantom-ct", tmp_path_factory.mktemp("data") / "ct", count=24, size=64, volumes=0)
    out = tmp_path_factory.mktemp("grid") / "tiny"
    first = Count()
    with pytest.raises(TrainingInterrupted):
        rp.reproduce(TINY, data=data, out=out, seeds=2, callbacks=[first, InterruptOnce("wide-seed0")])
    interrupted = json.loads((out / "wide-seed0" / "summary.json").read_text())
    second = Count()
    result = rp.reproduce(TINY, data=data, out=out, seeds=2, callbacks=[second])
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*-seed*/**/*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp:  # the third call through the command line
        mp.setitem(TABLES, "tiny", TINY)
        cli = runner.invoke(app, ["reproduce", "tiny", "--data", str(data), "--out", str(out), "--seeds", "2"],
                            env={"COLUMNS": "80"})
    again = json.loads((out / "table.json").read_text())
    return {"out": out, "first": first.started, "interrupted": interrupted, "second": second.started,
            "result": result, "cli": cli, "again": again, "stamps": stamps}


def _case_means(eval_dir: str) -> dict[str, float]:
    """Per-case mean Dice over the foreground classes, from cases.csv."""
    per: dict[str, list[float]] = {}
    with open(Path(eval_dir) / "cases.csv", newline="") as f:
        for r in csv.DictReader(f):
            per.setdefault(r["case"], []).append(float(r["dice"]))
    return {c: float(np.mean(v)) for c, v in per.items()}


def test_grid_writes_the_table_with_both_rows_and_the_paired_statistics(grid):
    res, out = grid["result"], grid["out"]
    small, wide, broken = res["rows"]
    assert small["status"] == wide["status"] == "ok" and broken["status"] == "failed"
    # ours = mean ± sd (ddof 1) over the two seeds of each run's summary
    dice = [json.loads((Path(d) / "summary.json").read_text())["average"]["dice"]["mean"] * 100
            for d in wide["eval_dirs"]]
    assert wide["values"]["avg:dice"]["mean"] == pytest.approx(np.mean(dice))
    assert wide["values"]["avg:dice"]["sd"] == pytest.approx(np.std(dice, ddof=1))
    assert small["paper"] == {"avg:dice": 50.0, "avg:hd95": None}
    # paired statistics: per-case means averaged over the seeds, wide - small, against scipy
    base = [_case_means(d) for d in small["eval_dirs"]]
    other = [_case_means(d) for d in wide["eval_dirs"]]
    cases = sorted(base[0])
    d = np.mean([[o[c] for c in cases] for o in other], 0) - np.mean([[b[c] for c in cases] for b in base], 0)
    s = wide["stats"]["dice"]
    assert s["mean_diff"] == pytest.approx(d.mean()) and s["n"] == len(cases) == 4
    assert s["p"] == pytest.approx(1.0 if not np.any(d) else stats.wilcoxon(d).pvalue)
    assert s["win"] + s["tie"] + s["loss"] == 4 and "stats" not in small
    md = (out / "table.md").read_text()
    assert "| U-Net 4 (baseline) | 50.00 |" in md and "| lr 0.01 |" in md and "| broken |" in md
    assert f"{d.mean() * 100:+.2f} [" in md
    assert json.loads((out / "table.json").read_text())["rows"][1]["stats"]["dice"]["n"] == 4


def test_failed_row_is_reported_and_the_grid_goes_on(grid):
    broken = grid["result"]["rows"][2]
    assert [f["run"] for f in broken["failures"]] == ["broken-seed0", "broken-seed1"]
    # the model's ValueError reaches the row as build_model's one-line ConfigError
    assert "model 'unet': bad model.kwargs: Sequence must have length 6" in broken["failures"][0]["error"]
    assert grid["result"]["failed_runs"] == 2
    md = (grid["out"] / "table.md").read_text()
    assert "| broken |  | failed (see below) |" in md and "broken-seed0 failed:" in md
    assert "broken-seed0" in (grid["out"] / "errors.log").read_text()


def test_interrupted_run_resumes_and_finished_runs_are_skipped(grid):
    assert grid["first"] == ["small-seed0", "small-seed1", "wide-seed0"]
    assert grid["interrupted"]["status"] == "interrupted"
    assert grid["second"] == ["wide-seed0", "wide-seed1"]  # the small runs were not trained again
    actions = grid["result"]["rows"][0]["actions"] | grid["result"]["rows"][1]["actions"]
    assert actions == {"small-seed0": "skipped", "small-seed1": "skipped", "wide-seed0": "resumed",
                       "wide-seed1": "trained"}
    resumed = json.loads((grid["out"] / "wide-seed0" / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed"] == 1 and resumed["epochs"] == 2
    # third call (the CLI): nothing trained or evaluated again (no file of a run changed), the same table;
    # exit code 1 because the broken row's runs failed
    cli = grid["cli"]
    assert cli.exit_code == 1 and "2 run(s) failed" in cli.output and "lr 0.01" in cli.output, cli.output
    delta = f"{grid['result']['rows'][1]['stats']['dice']['mean_diff'] * 100:+.2f} ["
    assert "…" not in cli.output and delta in cli.output  # the wide table, 80 columns wide, is not cut
    assert {p: p.stat().st_mtime_ns for p in grid["stamps"]} == grid["stamps"]
    assert set(grid["again"]["rows"][0]["actions"].values()) == {"skipped"}
    again, before = grid["again"]["rows"][1]["stats"]["dice"], grid["result"]["rows"][1]["stats"]["dice"]
    assert again["mean_diff"] == pytest.approx(before["mean_diff"]) and again["ci"] == pytest.approx(before["ci"])
    assert (again["p"], again["win"], again["tie"], again["loss"]) == (before["p"], before["win"], before["tie"], before["loss"])


def test_other_settings_in_the_same_folder_are_refused(grid):
    with pytest.raises(rp.MedsegError, match="other settings"):
        rp.check_plan(grid["out"], rp.plan(TINY, out=grid["out"], seeds=1, data=grid["out"], extra=["optim.lr=1"]), {})


def test_run_state_reads_the_summary(tmp_path):
    assert rp.run_state(tmp_path / "none") == ("new", None)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"status": "diverged", "note": "NaN loss"}))
    assert rp.run_state(tmp_path / "r") == ("diverged", "NaN loss")
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"status": "stopped_early", "note": "time"}))
    assert rp.run_state(tmp_path / "r") == ("finished", "time")
    (tmp_path / "r" / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert rp.run_state(tmp_path / "r") == ("restart", None)  # no last.ckpt to resume from
    (tmp_path / "r" / "config.yaml").write_text("{}")
    (tmp_path / "r" / "checkpoints").mkdir()
    (tmp_path / "r" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert rp.run_state(tmp_path / "r") == ("resume", None)


def test_merge_sets_joins_presets_in_order():
    assert rp.merge_sets([["preset=kvasir", "a.b=1"], ["preset=cpu"], ["preset=[x, y]", "c=2"]]) == [
        "preset=[kvasir, cpu, x, y]", "a.b=1", "c=2"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_table_row_resolves_to_a_valid_config(budget):
    """Every run of every table loads (recipe + table + budget + row overrides); cpu-small has the time guard."""
    for table in TABLES.values():
        assert all(set(row.paper) <= {c.key for c in table.columns} for row in table.rows), table.name
        for run in rp.plan(table, out=Path("x"), budget=budget, seeds=1, data="d"):
            cfg = load_config(run.recipe, run.overrides())
            assert cfg.seed == 0 and cfg.data.root == str(Path("d").absolute())
            if budget == "cpu-small":
                assert cfg.trainer.max_time_s == 480 and max(cfg.data.size) <= 160, run.id


def test_paper_numbers_as_printed():
    """Spot checks against the papers' tables (snet.txt Tables 5-6, mgrad-unet.txt Tables 3-5)."""
    assert TABLES["snet-table5"].row("unstagger").paper["avg:hd95"] == 30.11
    assert TABLES["snet-table6"].row("ffb").paper == {"group:tissue": 89.38, "group:small": 74.87,
                                                     "group:large": 86.32, "avg:dice": 80.97}
    assert TABLES["mgrad-ablation"].row("weighted").paper["avg:hd95"] == 23.16
    assert TABLES["mgrad-ablation-acdc"].row("neither").paper["class:LV:dice"] == 93.88
    assert not any(r.paper for r in TABLES["m2snet-table9"].rows)  # lost in m2snet.txt: blank, not invented


def test_cli_list_and_dry_run(tmp_path):
    res = runner.invoke(app, ["reproduce", "--list"])
    assert res.exit_code == 0
    for name in ("msnet-vs-m2snet", "m2snet-table9", "m2snet-table11", "snet-table6", "snet-table5", "mgrad-ablation"):
        assert name in res.output
    res = runner.invoke(app, ["reproduce", "snet-table5", "--data", str(tmp_path), "--seeds", "2", "--dry-run",
                              "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    train = [x for x in lines if x.startswith("medseg train")]
    assert len(train) == 4 and len([x for x in lines if x.startswith("medseg evaluate")]) == 4
    assert f"--out {tmp_path / 'g' / 'unstagger-seed1'}" in train[1] and "'preset=[unstagger]'" in train[0]
    assert "trainer.max_time_s=480" in train[0] and "--set seed=1" in train[1]
    assert "<= 32 min in all" in res.output
    assert not (tmp_path / "g").exists() and "# invalid" not in res.output  # a dry run writes nothing
    res = runner.invoke(app, ["reproduce", "snet-table5", "--dry-run", "--set", "optim.lr=-1"])
    assert res.exit_code == 0 and res.output.count("# invalid: ") == 2 and "optim.lr" in res.output
    bad = runner.invoke(app, ["reproduce", "no-such-table", "--dry-run"])
    assert bad.exit_code == 2 and "unknown table" in bad.output


def test_value_of_reads_each_column_kind():
    summary = {
        "class_names": ["background", "RV", "LV"],
        "average": {"dice": {"mean": 0.5}, "hd95": {"mean": 7.0}},
        "classes": {"1": {"dice": {"mean": 0.4}}, "2": {"dice": {"mean": 0.6}, "hd95": {"mean": float("nan")}}},
        "pooled": {"average": {"dice": {"mean": 0.55}}, "classes": {"1": {"dice": {"mean": 0.45}}}},
        "class_groups": {"small": {"labels": [1], "dice": {"mean": 0.4}}},
        "polyp": {"meanDic": 0.8},
    }
    assert rp.value_of(summary, "avg:dice") == 0.55  # pooled when the recipe pools (as the paper row)
    assert rp.value_of(summary, "avg:hd95") == 7.0  # distances are per case
    assert rp.value_of(summary, "class:RV:dice") == 0.45
    assert rp.value_of(summary, "class:LV:hd95") is None  # NaN
    assert rp.value_of(summary, "class:Myo:dice") is None  # no such class
    assert rp.value_of(summary, "group:small") == 0.4 and rp.value_of(summary, "polyp:meanDic") == 0.8
    with pytest.raises(ValueError, match="unknown column kind"):
        rp.value_of(summary, "mean:dice")
