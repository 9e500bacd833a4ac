"""Paired comparison of evaluated runs (``medseg compare A B [C ...]``).

Each argument is a run folder (its ``eval/<split>-<protocol>-<mode>.../`` folder is used; it must be
the only one for ``split``), an evaluation folder (``cases.csv`` + ``summary.json``), or several of
them joined by commas: seeds of one recipe, summarised as mean ± sd over the seeds and compared
through each case's mean over the seeds. The first argument is the baseline; every other one is
compared with it, per class (each foreground class and label group of ``cases.csv``) and on the
per-case mean over the foreground classes (``mean``):

- the per-case paired difference ``d = other - baseline`` on every case both score (a case whose
  value is NaN in either, e.g. a distance in ``strict`` mode with an empty mask, is left out and counted),
- its mean with a bootstrap 95 % CI (:func:`scipy.stats.bootstrap`, BCa, 10,000 resamples, seeded),
- the Wilcoxon signed-rank p (:func:`scipy.stats.wilcoxon`, two-sided; 1.0 when every d is 0),
- win / tie / loss counts (win: better, i.e. higher, or lower for distances; tie: ``|d| <= 1e-9``).

Runs evaluated on different case sets, or with another protocol or empty-mask mode, are refused
(one line): their numbers do not pair.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.utils import MedsegError, atomic_write_text, json_safe

#: Metrics where lower is better (a win is a negative difference).
LOWER_IS_BETTER = ("hd95", "asd", "assd")
MEAN = "mean"  # the per-case mean over the foreground classes
TIE = 1e-9


@dataclass
class Evaluation:
    """One evaluation folder: its summary and ``values[class][case]`` of one metric."""

    path: Path
    summary: dict[str, Any]
    names: dict[str, str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)


def find_eval_dir(path: Path, split: str = "test") -> Path:
    """``path`` if it is an evaluation folder, else the run's only ``eval/<split>-*`` evaluation folder (a
    cross-validation folder: its ensemble's ``eval/ensemble-<split>-*``; ``--split oof``: ``eval/oof-*``)."""
    path = Path(path)
    if (path / "cases.csv").is_file() and (path / "summary.json").is_file():
        return path
    if (path / "summary.json").is_file() and "sets" in json.loads((path / "summary.json").read_text()):
        raise MedsegError(f"{path}: holds several splits; pass one split's sub-folder")
    if not (path / "eval").is_dir():
        raise MedsegError(f"{path}: neither an evaluation folder nor an evaluated run (run `medseg evaluate` first)")
    found = sorted(d for d in (path / "eval").glob(f"{split}-*") if (d / "cases.csv").is_file())
    if not found:  # a cross-validation folder: its folds' ensemble (RUN_DIR/eval/ensemble-<split>-*)
        found = sorted(d for d in (path / "eval").glob(f"ensemble-{split}-*") if (d / "cases.csv").is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(d.name for d in found)})"
        raise MedsegError(f"{path}: {what} evaluations of split {split!r}; pass the evaluation folder itself")
    return found[0]


def load_evaluation(path: Path, metric: str, split: str = "test") -> Evaluation:
    """Read ``metric`` per case and class from an evaluation folder (or a run's, see :func:`find_eval_dir`)."""
    d = find_eval_dir(path, split)
    summary = json.loads((d / "summary.json").read_text())
    ev = Evaluation(path=d, summary=summary, names={})
    with open(d / "cases.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and metric not in rows[0]:
        cols = [c for c in rows[0] if c not in ("case", "class", "class_name", "gt_empty", "pred_empty", "group")]
        raise MedsegError(f"{d}: no metric {metric!r} in cases.csv; metrics: {', '.join(cols)}")
    per_case: dict[str, list[float]] = {}
    for r in rows:
        c = r["class"]
        ev.names[c] = r.get("class_name") or f"class {c}"
        v = float(r[metric]) if r[metric] not in ("", None) else math.nan
        ev.values.setdefault(c, {})[r["case"]] = v
        if not r.get("group"):
            per_case.setdefault(r["case"], []).append(v)
    ev.values[MEAN] = {case: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for case, v in per_case.items()}
    ev.names[MEAN] = MEAN
    return ev


def check_comparable(evals: list[Evaluation]) -> None:
    """Refuse (one line) evaluations with other protocols, modes or case sets than the first."""
    first = evals[0]
    cases = set(first.values[MEAN])
    for ev in evals[1:]:
        for key in ("protocol", "mode"):
            if ev.summary.get(key) != first.summary.get(key):
                raise MedsegError(f"cannot compare: {first.path} is {key} {first.summary.get(key)!r} but {ev.path} "
                                  f"is {ev.summary.get(key)!r}; evaluate both the same way")
        other = set(ev.values[MEAN])
        if other != cases:
            only = sorted(cases - other)[:3] or sorted(other - cases)[:3]
            raise MedsegError(f"cannot compare: {first.path} and {ev.path} were evaluated on different cases "
                              f"({len(cases ^ other)} differ, e.g. {', '.join(only)})")
        if set(ev.values) != set(first.values):
            raise MedsegError(f"cannot compare: {first.path} and {ev.path} score different classes")


def paired_stats(baseline: np.ndarray, other: np.ndarray, *, lower_is_better: bool = False, seed: int = 0,
                 n_resamples: int = 10_000) -> dict[str, Any]:
    """Paired statistics of ``other - baseline`` over the cases finite in both (see the module docstring)."""
    from scipy import stats

    ok = np.isfinite(baseline) & np.isfinite(other)
    d = other[ok] - baseline[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "excluded": int((~ok).sum())}
    if d.size == 0:
        return out | {"mean_diff": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "win": 0, "tie": 0, "loss": 0}
    better = -d if lower_is_better else d
    out.update(mean_diff=float(d.mean()), win=int((better > TIE).sum()), tie=int((np.abs(d) <= TIE).sum()),
               loss=int((better < -TIE).sum()))
    if np.ptp(d) == 0 or d.size < 2:  # no spread: the bootstrap distribution is a point
        out["ci"] = [float(d[0]), float(d[0])] if np.ptp(d) == 0 else [math.nan, math.nan]
    else:
        res = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="BCa",
                              rng=np.random.default_rng(seed))
        out["ci"] = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    out["p"] = 1.0 if not np.any(np.abs(d) > 0) else float(stats.wilcoxon(d).pvalue)
    return out


def compare(
    groups: list[list[Path]],
    *,
    metric: str = "dice",
    split: str = "test",
    seed: int = 0,
    n_resamples: int = 10_000,
) -> dict[str, Any]:
    """Compare each group of runs (seeds) with the first; returns ``{"rows": [...], ...}`` (see the module)."""
    if len(groups) < 2:
        raise MedsegError("compare needs at least two runs (or groups of seeds)")
    evals = [[load_evaluation(p, metric, split) for p in g] for g in groups]
    check_comparable([e for g in evals for e in g])
    first = evals[0][0]
    cases = sorted(first.values[MEAN])
    classes = [c for c in first.values if c != MEAN] + [MEAN]
    lower = metric in LOWER_IS_BETTER
    labels = ["+".join(Path(p).name for p in g) for g in groups]  # short names for the table and plot
    rows: list[dict[str, Any]] = []
    per_case: dict[str, list[list[float]]] = {}
    for c in classes:
        arrays = []
        for label, g in zip(labels, evals):
            seeds = np.array([[e.values[c][k] for k in cases] for e in g])  # [seeds, cases]
            with np.errstate(invalid="ignore"):
                arrays.append(np.nanmean(seeds, axis=0) if np.isfinite(seeds).any() else seeds[0])
            run_means = [float(np.nanmean(s)) if np.isfinite(s).any() else math.nan for s in seeds]
            row = {"class": c, "name": first.names[c], "run": label, "seeds": len(g),
                   "mean": float(np.mean(run_means)), "sd": float(np.std(run_means, ddof=1)) if len(g) > 1 else None}
            if arrays[-1] is not arrays[0]:
                row.update(paired_stats(arrays[0], arrays[-1], lower_is_better=lower, seed=seed,
                                        n_resamples=n_resamples))
            rows.append(row)
        per_case[c] = [a.tolist() for a in arrays]
    return {"metric": metric, "split": split, "runs": [[str(p) for p in g] for g in groups], "names": labels, "cases": cases, "seed": seed,
            "n_resamples": n_resamples, "protocol": first.summary.get("protocol"), "mode": first.summary.get("mode"),
            "eval_dirs": [[str(e.path) for e in g] for g in evals], "rows": rows, "per_case": per_case}


def _f(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * scale:.{digits}f}"


def to_markdown(result: dict[str, Any]) -> str:
    """One row per class and run: mean (± sd over seeds), and against the first run Δ, CI, p, W/T/L."""
    m = result["metric"]
    scale = 1.0 if m in LOWER_IS_BETTER else 100.0
    unit = "" if scale == 1.0 else " (%)"
    head = ["Class", "Run", f"{m}{unit}", "Δ vs first", "95 % CI", "Wilcoxon p", "W/T/L", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        mean = _f(r["mean"], scale) + (f" ± {_f(r['sd'], scale)}" if r["sd"] is not None else "")
        if "mean_diff" in r:
            ci = f"[{_f(r['ci'][0], scale)}, {_f(r['ci'][1], scale)}]"
            cells = [_f(r["mean_diff"], scale), ci, _f(r["p"], digits=4), f"{r['win']}/{r['tie']}/{r['loss']}",
                     str(r["n"])]
        else:
            cells = ["baseline", "", "", "", str(len(result["cases"]))]
        lines.append("| " + " | ".join([r["name"], r["run"] + (f" ({r['seeds']} seeds)" if r["seeds"] > 1 else ""),
                                         mean] + cells) + " |")
    foot = (f"_{result['split']}: {len(result['cases'])} cases; protocol {result['protocol']}, mode {result['mode']}; "
            f"Δ = run − first per case; BCa bootstrap CI ({result['n_resamples']} resamples, seed {result['seed']}); "
            f"W/T/L: cases better/equal/worse than the first_")
    return "\n".join(lines) + "\n\n" + foot + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    """Paired strip plot of the per-case ``mean`` values: one column per run, a line per case, a box per run."""
    from matplotlib.figure import Figure

    from medseg.engine.visualize import save_figure

    values = np.array(result["per_case"][MEAN])  # [runs, cases]
    fig = Figure(figsize=(1.6 + 1.4 * len(values), 4))
    ax = fig.subplots()
    x = np.arange(len(values))
    ax.plot(x, values, color="0.7", lw=0.6, zorder=1)
    ax.boxplot([v[np.isfinite(v)] for v in values], positions=x, widths=0.35, showfliers=False, zorder=2)
    ax.scatter(np.repeat(x, values.shape[1]), values.ravel(), s=10, zorder=3)
    ax.set_xticks(x, result["names"], rotation=20)
    ax.set_ylabel(f"{result['metric']} (per case, mean over classes)")
    ax.set_title(f"{values.shape[1]} paired cases; grey lines join a case across runs", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md = atomic_write_text(out / "compare.md", to_markdown(result))
    js = atomic_write_text(out / "compare.json", json.dumps(json_safe(result), indent=2, allow_nan=False))
    return {"markdown": md, "json": js, "png": plot(result, out / "compare.png")}
