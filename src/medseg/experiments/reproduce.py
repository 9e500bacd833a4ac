"""``medseg reproduce NAME``: train a paper table's grid of runs, evaluate them, write the table.

One parent folder ``OUT`` (default ``reproduce/<name>-<budget>``) holds everything:

- ``plan.json``: table, budget, data and every run's ``medseg train`` arguments, written before any
  training; a later call refuses to reuse a run folder made with other arguments (one line);
- ``<row>-seed<i>/``: one run folder per row and seed (``seed=i``), the layout of ``medseg train``,
  evaluated by ``medseg evaluate`` into its ``eval/<split>-<protocol>-<mode>/``;
- ``table.md`` / ``table.json``: the table in the paper's layout, ``errors.log``: tracebacks of failed runs.

A call resumes where the last one stopped: a run whose ``summary.json`` says ``completed`` (or
``stopped_early``: the budget's time guard) is not trained again and an evaluated run is not
evaluated again; an interrupted run (``checkpoints/last.ckpt``, no final status) continues with
``medseg train --resume`` (:func:`medseg.engine.train.fit`, exact resume); a run folder that stopped
before its first checkpoint is moved aside (``<run>.replaced-<time>``) and started again. A run that
fails (diverged, bad data, an error) is reported in the table and the grid goes on; a diverged run
stays reported until its folder is moved away. Ctrl-C stops the grid after the current step
(``last.ckpt`` written); the same command continues it.

Cells: "ours" is the mean ± sd (``ddof=1``) over the seeds of each run's evaluation summary; the paired
statistics of each row against the baseline row come from :func:`medseg.experiments.compare.compare`
on the runs' ``cases.csv``: per-case values averaged over the seeds, mean difference with a BCa
bootstrap 95 % CI (10,000 resamples, seed 0), Wilcoxon signed-rank p, wins/ties/losses, on the
per-case mean over the foreground classes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import shlex
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import parse_override
from medseg.experiments.tables import BUDGETS, CPU_SMALL_SECONDS, TABLES, Table
from medseg.utils import MedsegError, atomic_write_text, json_safe

_log = logging.getLogger(__name__)

FINISHED = ("completed", "stopped_early")  # summary.json statuses of a run that needs no more training
OVERLAP = ("dice", "iou", "precision", "recall", "specificity")  # pooled when the recipe pools
LOWER_IS_BETTER = ("hd95", "asd", "assd")


def get_table(name: str) -> Table:
    if name not in TABLES:
        raise MedsegError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    return TABLES[name]


def merge_sets(groups: Iterable[Iterable[str]]) -> list[str]:
    """All ``key=value`` items in order, every ``preset=...`` merged into one ``preset=[a, b]`` (first)."""
    presets: list[str] = []
    others: list[str] = []
    for item in (i for g in groups for i in g):
        keys, value = parse_override(item)
        if keys == ["preset"]:
            presets += [value] if isinstance(value, str) else [str(v) for v in value or []]
        else:
            others.append(item)
    return ([f"preset=[{', '.join(presets)}]"] if presets else []) + others


@dataclass
class PlannedRun:
    """One row x seed: ``medseg train --recipe RECIPE [--data DATA] --out RUN_DIR --set ...``."""

    id: str
    row: str
    seed: int
    run_dir: Path
    recipe: str
    sets: list[str]
    data: str | None = None

    def train_args(self) -> list[str]:
        args = ["train", "--recipe", self.recipe] + (["--data", self.data] if self.data else [])
        args += ["--out", str(self.run_dir)]
        for s in self.sets:
            args += ["--set", s]
        return args

    def overrides(self) -> list[str]:
        """The ``--set`` list ``medseg train`` builds from these arguments (``--data`` included)."""
        return self.sets + ([f"data.root={self.data}", "data.builtin=null"] if self.data else [])


def default_out(table: Table, budget: str) -> Path:
    return Path("reproduce") / f"{table.name}-{budget}"


def plan(table: Table, *, out: Path, budget: str = "cpu-small", seeds: int = 1, data: str | Path | None = None,
         recipe: str | None = None, extra: Sequence[str] = ()) -> list[PlannedRun]:
    """The grid: every row with seeds 0..seeds-1; overrides = table, budget, row, ``extra``, then ``seed=i``."""
    if budget not in BUDGETS:
        raise MedsegError(f"unknown budget {budget!r}; budgets: {', '.join(BUDGETS)}")
    if seeds < 1:
        raise MedsegError(f"--seeds must be >= 1, got {seeds}")
    for item in extra:
        parse_override(item)  # a malformed --set fails here, before anything runs
    root = str(Path(data).absolute()) if data is not None else None
    return [
        PlannedRun(id=f"{row.id}-seed{s}", row=row.id, seed=s, run_dir=Path(out) / f"{row.id}-seed{s}",
                   recipe=recipe or table.recipe, data=root,
                   sets=merge_sets([table.sets, table.budgets[budget], row.sets, extra, [f"seed={s}"]]))
        for row in table.rows for s in range(seeds)
    ]


def commands(runs: list[PlannedRun], device: str = "cpu") -> list[str]:
    """The shell commands the grid amounts to: train then evaluate, per run."""
    lines = []
    for r in runs:
        lines.append(shlex.join(["medseg", *r.train_args()]))
        lines.append(shlex.join(["medseg", "evaluate", str(r.run_dir)] + (["--device", device] if device != "cpu" else [])))
    return lines


def check_configs(runs: list[PlannedRun]) -> list[str]:
    """``<run>: <problem>`` for every run whose recipe + overrides do not validate (nothing is built)."""
    from medseg.config import ConfigError, load_config

    problems = []
    for r in runs:
        try:
            load_config(r.recipe, r.overrides())
        except ConfigError as err:
            problems.append(f"{r.id}: {err}")
    return problems


def estimate(table: Table, runs: list[PlannedRun], budget: str) -> str:
    """One line: how long the grid's training takes at most (cpu-small) or that it follows the recipe."""
    if budget == "cpu-small":
        minutes = len(runs) * CPU_SMALL_SECONDS / 60
        return (f"{len(runs)} runs; training <= {CPU_SMALL_SECONDS / 60:.0f} min each (trainer.max_time_s), "
                f"<= {minutes:.0f} min in all, plus start-up and evaluation of each run")
    return f"{len(runs)} runs at the recipe's full schedule ({table.recipe})"


# ------------------------------------------------------------------------------------------ state
def run_state(run_dir: Path) -> tuple[str, str | None]:
    """``new`` | ``finished`` | ``diverged`` | ``resume`` | ``restart``, and the summary's note."""
    entries = [p for p in run_dir.iterdir() if p.name != ".lock"] if run_dir.is_dir() else []
    if not entries:
        return "new", None
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            summary = {}
    status = summary.get("status")
    if status in FINISHED:
        return "finished", summary.get("note")
    if status == "diverged":
        return "diverged", summary.get("note")
    if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume", None
    return "restart", None


def check_plan(out: Path, runs: list[PlannedRun], header: dict[str, Any]) -> None:
    """Refuse run folders made with other arguments; record this plan in ``OUT/plan.json``."""
    path = out / "plan.json"
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise MedsegError(f"{path}: not a plan written by medseg reproduce; choose another --out") from None
    old = stored.get("runs", {})
    for r in runs:
        if run_state(r.run_dir)[0] != "new" and old.get(r.id) != r.train_args():
            why = "its arguments differ" if r.id in old else f"{path.name} does not list it"
            raise MedsegError(f"{r.run_dir}: already holds a run made with other settings ({why}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**header, "runs": old | {r.id: r.train_args() for r in runs}}, indent=2))


# ---------------------------------------------------------------------------------- train, evaluate
@dataclass
class Outcome:
    run: PlannedRun
    action: str = "skipped"  # trained | resumed | skipped | failed
    status: str | None = None  # the run's summary.json status
    note: str | None = None
    error: str | None = None
    eval_dir: Path | None = None
    failed_cases: list[str] = field(default_factory=list)


def _one_line(err: BaseException) -> str:
    from medseg.utils import printable

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return printable(text if isinstance(err, MedsegError) else f"{type(err).__name__}: {text}")


def _log_error(out: Path, run: PlannedRun, err: BaseException) -> None:
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    with open(out / "errors.log", "a", encoding="utf-8") as f:
        f.write(f"--- {stamp} {run.id}\n{tb}\n")


def train(run: PlannedRun, callbacks: list[Any] | None = None) -> Outcome:
    """Train, resume or skip ``run`` (see the module docstring); a failure is returned, not raised.

    :class:`~medseg.engine.safety.TrainingInterrupted` (Ctrl-C, SIGTERM) is raised: it stops the grid.
    """
    from medseg.config import load_config
    from medseg.engine.safety import DivergenceError, TrainingInterrupted
    from medseg.engine.train import fit

    state, note = run_state(run.run_dir)
    if state == "finished":
        return Outcome(run, "skipped", note=note)
    if state == "diverged":
        return Outcome(run, "failed", status="diverged",
                       error=f"diverged: {note} (move {run.run_dir} away to train it again)")
    try:
        if state == "resume":
            _log.info("%s: resuming the interrupted run", run.id)
            fit(None, resume=run.run_dir, callbacks=callbacks)
            action = "resumed"
        else:
            fit(load_config(run.recipe, run.overrides()), out=run.run_dir, overwrite=state == "restart",
                callbacks=callbacks)
            action = "trained"
    except TrainingInterrupted:
        raise
    except DivergenceError as err:
        _log_error(run.run_dir.parent, run, err)
        return Outcome(run, "failed", status="diverged", error=f"diverged: {_one_line(err)}")
    except Exception as err:  # a row's failure is reported in the table; the grid goes on
        _log_error(run.run_dir.parent, run, err)
        return Outcome(run, "failed", error=_one_line(err))
    state, note = run_state(run.run_dir)
    return Outcome(run, action, note=note)


def find_evaluation(run_dir: Path) -> Path | None:
    """The newest finished evaluation of the run's test split (``eval/<split>-*`` with cases.csv and summary.json)."""
    from medseg.config import load_config
    from medseg.engine.evaluate import split_folder_name

    split = split_folder_name(load_config(str(run_dir / "config.yaml")).data.test_split)
    found = [d for d in (run_dir / "eval").glob(f"{split}-*") if (d / "cases.csv").is_file() and (d / "summary.json").is_file()]
    return max(found, key=lambda d: (d / "summary.json").stat().st_mtime) if found else None


def evaluate(outcome: Outcome, device: str = "cpu") -> Outcome:
    """Evaluate a trained run on its recipe's test split unless it was evaluated already."""
    from medseg.engine.evaluate import evaluate_run

    run = outcome.run
    try:
        outcome.eval_dir = find_evaluation(run.run_dir)
        if outcome.eval_dir is None:
            summary = evaluate_run(run.run_dir, device=device)
            outcome.eval_dir = Path(summary["out_dir"])
        summary = json.loads((outcome.eval_dir / "summary.json").read_text())
        outcome.failed_cases = list(summary.get("failed") or [])
        if not summary.get("cases"):
            raise MedsegError(f"{outcome.eval_dir}: no case could be evaluated")
    except Exception as err:
        _log_error(run.run_dir.parent, run, err)
        outcome.action, outcome.eval_dir = "failed", None
        outcome.error = f"evaluation: {_one_line(err)}"
    return outcome


# ------------------------------------------------------------------------------------------ table
def value_of(summary: dict[str, Any], key: str) -> float | None:
    """A column's value in an evaluation summary (see :class:`~medseg.experiments.tables.Column`); None if absent."""
    kind, _, rest = key.partition(":")
    if kind not in ("avg", "class", "group", "polyp"):
        raise ValueError(f"unknown column kind {kind!r} in {key!r}; use avg, class, group or polyp")
    try:
        if kind == "avg":
            src = summary["pooled"] if rest in OVERLAP and summary.get("pooled") else summary
            v = src["average"][rest]["mean"]
        elif kind == "class":
            name, metric = rest.rsplit(":", 1)
            idx = summary["class_names"].index(name)
            src = summary["pooled"] if metric in OVERLAP and summary.get("pooled") else summary
            v = src["classes"][str(idx)][metric]["mean"]
        elif kind == "group":
            v = summary["class_groups"][rest]["dice"]["mean"]
        else:
            v = summary["polyp"][rest]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _mean_sd(values: list[float]) -> dict[str, Any]:
    v = np.array([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size), "seeds": values}


def paired(table: Table, base_dirs: list[Path], dirs: list[Path]) -> dict[str, Any]:
    """Each of ``table.stats`` against the baseline, via :func:`medseg.experiments.compare.compare`."""
    from medseg.experiments.compare import MEAN, compare

    out: dict[str, Any] = {}
    for metric in table.stats:
        try:
            res = compare([base_dirs, dirs], metric=metric)
        except MedsegError as err:
            out[metric] = {"error": _one_line(err)}
            continue
        row = next(r for r in res["rows"] if r["class"] == MEAN and "mean_diff" in r)
        out[metric] = {k: row[k] for k in ("mean_diff", "ci", "p", "win", "tie", "loss", "n", "excluded")}
        out[metric]["cases"] = len(res["cases"])
        out[metric]["per_class"] = [{k: r.get(k) for k in ("class", "name", "mean_diff", "ci", "p")}
                                    for r in res["rows"] if "mean_diff" in r]
    return out


def collect(table: Table, outcomes: list[Outcome], *, budget: str, seeds: int, data: str | None,
            recipe: str) -> dict[str, Any]:
    """The table as data: per row the runs, column values (mean ± sd over seeds), paper numbers, statistics."""
    paper_shown = recipe == table.recipe
    by_row = {row.id: [o for o in outcomes if o.run.row == row.id] for row in table.rows}
    rows: list[dict[str, Any]] = []
    for row in table.rows:
        done = [o for o in by_row[row.id] if o.eval_dir is not None]
        summaries = [json.loads((o.eval_dir / "summary.json").read_text()) for o in done]  # type: ignore[operator]
        values = {}
        for col in table.columns:
            scale = 100.0 if col.percent else 1.0
            vals = [value_of(s, col.key) for s in summaries]
            values[col.key] = _mean_sd([None if v is None else v * scale for v in vals])
        failures = [{"run": o.run.id, "error": o.error} for o in by_row[row.id] if o.error]
        notes = [f"{o.run.id}: {o.note}" for o in done if o.note]
        notes += [f"{o.run.id}: {len(o.failed_cases)} test case(s) failed, e.g. {o.failed_cases[0]}"
                  for o in done if o.failed_cases]
        rows.append({
            "id": row.id, "label": row.label, "sets": list(row.sets),
            "status": "ok" if len(done) == len(by_row[row.id]) else ("partial" if done else "failed"),
            "runs": [str(o.run.run_dir) for o in by_row[row.id]],
            "eval_dirs": [str(o.eval_dir) for o in done],
            "actions": {o.run.id: o.action for o in by_row[row.id]},
            "values": values,
            "paper": {c.key: row.paper.get(c.key) for c in table.columns} if paper_shown else {},
            "failures": failures, "notes": notes,
        })
    base = next(r for r in rows if r["id"] == table.baseline)
    for r in rows:
        if r["id"] == table.baseline or not r["eval_dirs"]:
            continue
        if not base["eval_dirs"]:
            r["stats"] = {m: {"error": "the baseline row has no evaluated run"} for m in table.stats}
        else:
            r["stats"] = paired(table, [Path(p) for p in base["eval_dirs"]], [Path(p) for p in r["eval_dirs"]])
    notes = list(table.notes)
    if not paper_shown:
        notes.insert(0, f"The paper numbers are for recipe {table.recipe}; this grid ran {recipe}: not shown.")
    return {
        "table": table.name, "title": table.title, "source": table.source, "recipe": recipe, "budget": budget,
        "budget_sets": list(table.budgets[budget]), "seeds": seeds, "data": data, "baseline": table.baseline,
        "columns": [{"key": c.key, "label": c.label, "percent": c.percent} for c in table.columns],
        "stats_metrics": list(table.stats), "rows": rows, "notes": notes,
        "failed_runs": sum(len(r["failures"]) for r in rows),
    }


def _num(v: float | None, digits: int = 2) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _ours(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "–"
    return _num(cell["mean"]) + (f" ± {_num(cell['sd'])}" if cell["sd"] is not None else "")


def _stat_cells(r: dict[str, Any], metric: str) -> list[str]:
    s = (r.get("stats") or {}).get(metric)
    if s is None:
        return ["baseline" if r.get("is_baseline") else "–", "", ""]
    if "error" in s:
        return [f"not compared: {s['error']}", "", ""]
    scale = 1.0 if metric in LOWER_IS_BETTER else 100.0
    lo, hi = (None if v is None else v * scale for v in s["ci"])
    diff = s["mean_diff"] * scale if s["mean_diff"] is not None else None
    return [f"{diff:+.2f} [{_num(lo)}, {_num(hi)}]" if diff is not None and math.isfinite(diff) else "–",
            _num(s["p"], 4), f"{s['win']}/{s['tie']}/{s['loss']}"]


def to_markdown(result: dict[str, Any]) -> str:
    """The table in the paper's layout: per column the paper's number and ours, then the paired statistics."""
    cols = result["columns"]
    head = ["Row"]
    for c in cols:
        head += [f"{c['label']} paper", f"{c['label']} ours"]
    for m in result["stats_metrics"]:
        unit = "" if m in LOWER_IS_BETTER else " (%)"
        head += [f"Δ {m}{unit} [95 % CI]", f"p ({m})", f"W/T/L ({m})"]
    lines = [f"## {result['title']}", "", f"Source: {result['source']}", "",
             f"Recipe `{result['recipe']}`, budget `{result['budget']}`, "
             + (f"seeds 0..{result['seeds'] - 1}, " if result["seeds"] > 1 else "seed 0, ") +
             f"data `{result['data']}`; baseline row of the statistics: `{result['baseline']}`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        r = {**r, "is_baseline": r["id"] == result["baseline"]}
        label = r["label"] + (" (baseline)" if r["is_baseline"] else "")
        cells = [label]
        for c in cols:
            p = r["paper"].get(c["key"])
            cells.append("" if p is None else f"{p:.2f}")
            if r["status"] == "failed":
                cells.append("failed (see below)" if c is cols[0] else "")
            else:
                cells.append(_ours(r["values"][c["key"]]))
        for m in result["stats_metrics"]:
            cells += _stat_cells(r, m)
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")
    foot = ["", "Ours: mean ± sd (ddof 1) over the seeds' evaluations of the test split. Δ: per-case paired difference "
            "row − baseline of the per-case mean over foreground classes in cases.csv (each case averaged over the "
            "seeds), BCa bootstrap 95 % CI (10,000 resamples, seed 0), two-sided Wilcoxon signed-rank p, "
            "W/T/L = cases better / equal / worse than the baseline (medseg.experiments.compare). Dice / IoU in %, "
            "distances in voxels. Blank paper cell: the paper gives no number we could read."]
    extra = list(result["notes"])
    for r in result["rows"]:
        extra += [f"{r['label']}: {f['run']} failed: {f['error']}" for f in r["failures"]]
        extra += [f"{r['label']}: {n}" for n in r["notes"]]
    if extra:
        foot += [""] + [f"- {n}" for n in extra]
    return "\n".join(lines + foot) + "\n"


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``table.md`` and ``table.json`` in ``out``."""
    md = atomic_write_text(out / "table.md", to_markdown(result))
    js = atomic_write_text(out / "table.json", json.dumps(json_safe(result), indent=2, allow_nan=False))
    return {"markdown": md, "json": js}


def reproduce(table: Table | str, *, data: str | Path | None = None, out: str | Path | None = None,
              budget: str = "cpu-small", seeds: int = 1, recipe: str | None = None, extra: Sequence[str] = (),
              device: str = "cpu", callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run (or continue) the grid of ``table``, evaluate it and write ``table.md`` / ``table.json`` in ``out``.

    Returns the table as data (:func:`collect`) with ``out`` and each run's action. ``callbacks``: extra
    Lightning callbacks for every training (tests, progress hooks).
    """
    table = get_table(table) if isinstance(table, str) else table
    if data is not None and not Path(data).exists():
        raise MedsegError(f"data folder not found: {data}")
    out = Path(out) if out is not None else default_out(table, budget)
    runs = plan(table, out=out, budget=budget, seeds=seeds, data=data, recipe=recipe, extra=extra)
    header = {"table": table.name, "recipe": recipe or table.recipe, "budget": budget,
              "data": runs[0].data, "extra": list(extra)}
    check_plan(out, runs, header)
    outcomes: list[Outcome] = []
    for i, run in enumerate(runs, 1):
        _log.info("[%d/%d] %s", i, len(runs), run.id)
        outcome = train(run, callbacks)
        if outcome.action != "failed":
            outcome = evaluate(outcome, device=device)
        if outcome.error:
            _log.warning("%s failed: %s", run.id, outcome.error)
        outcomes.append(outcome)
    result = collect(table, outcomes, budget=budget, seeds=seeds, data=runs[0].data, recipe=recipe or table.recipe)
    result["out"] = str(out)
    result["files"] = {k: str(v) for k, v in write(result, out).items()}
    return result
