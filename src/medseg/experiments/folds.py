"""K-fold cross-validation (``medseg train --folds K --fold i|all``) and its summary.

A cross-validation folder (``--out``, default ``runs/<recipe>-cv<K>``)::

    CV_DIR/
      cv.json              the plan: K, the config, where the folds and groups came from
      splits_final.json    the folds, nnU-Net format: [{"train": [...], "val": [...]}, ...]
      fold_0/ ... fold_<K-1>/   one run folder each (its config has data.splits_file + data.fold)
      fold_<i>/eval/val-<tag>/  each fold's model on its own val cases
      eval/oof-<tag>/      the out-of-fold predictions evaluated together (each case by the fold
                           that did not train on it): cases.csv, summary.json, table.md
      cv_summary.json, cv_summary.md   per-fold metrics, mean ± sd over the folds, out-of-fold

The folds are made once (:func:`medseg.data.splits.make_folds`: seeded by ``data.split_seed``,
grouped by patient / volume / video) from the reader's cross-validation pool (the training split
with any validation cases carved from it; the test split is never touched) and kept in the CV
folder, not in the data folder, which medseg never writes to. An existing ``splits_final.json`` in
the CV folder is reused; ``--splits FILE`` copies a given one in (nnU-Net's own, for example).

``--fold all`` trains the folds one after another and is resumable: a finished fold
(``summary.json`` status completed / stopped_early) is skipped, an interrupted one continues from
its ``last.ckpt`` (the ``--resume`` machinery), a fold folder without a checkpoint starts again
(the old folder is moved aside, never deleted). Once every fold is trained, the summary is written.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from medseg.config import Config
from medseg.data.splits import (
    SPLITS_FILE,
    Folds,
    case_groups,
    find_groups_file,
    make_folds,
    read_splits,
    write_splits,
)
from medseg.engine.ensemble import CV_FILE, fold_dir
from medseg.experiments.reproduce import FINISHED
from medseg.utils import MedsegError, atomic_write_text, json_safe

_log = logging.getLogger(__name__)

#: Config keys that may differ between invocations on one CV folder: how to run, never what is trained.
RUN_ONLY_KEYS = ("trainer.progress", "trainer.log_every_n_steps", "trainer.checkpoint_every_n_steps",
                 "trainer.overlays", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
                 "trainer.strategy", "data.num_workers")


def _plan_config(cfg: Config) -> dict[str, Any]:
    data = cfg.to_dict()
    for key in RUN_ONLY_KEYS:
        section, name = key.split(".")
        data[section].pop(name, None)
    return data


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{prefix[:-1]}: {a!r} -> {b!r}"


def prepare_cv(cfg: Config, cv_dir: Path, k: int, splits: Path | None = None, groups: Path | None = None) -> Folds:
    """Check or write ``cv.json`` and ``splits_final.json`` in ``cv_dir``; returns the folds (see the module docstring)."""
    from medseg.data.readers import build_reader
    from medseg.engine.datamodule import prepare_data_root

    plan_path, splits_path = cv_dir / CV_FILE, cv_dir / SPLITS_FILE
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan.get("folds") != k:
            raise MedsegError(f"{cv_dir}: holds a {plan.get('folds')}-fold cross-validation, not {k} folds; choose another --out")
        diff = _first_difference(plan.get("config"), _plan_config(cfg))
        if diff:
            raise MedsegError(f"{cv_dir}: holds a cross-validation of another configuration ({diff}); choose another --out")
    elif cv_dir.exists() and (not cv_dir.is_dir() or any(cv_dir.iterdir())):
        raise MedsegError(f"{cv_dir}: exists and is not a medseg cross-validation folder (no {CV_FILE}); choose another --out")
    data = prepare_data_root(cfg.data, default_root=Path("data"), model=cfg.model)
    reader = build_reader(data.model_copy(update={"splits_file": None}))
    if splits_path.is_file():
        folds = read_splits(splits_path)
        if splits is not None and read_splits(splits) != folds:
            raise MedsegError(f"{splits}: differs from the folds {splits_path} already holds; choose another --out")
        origin = (json.loads(plan_path.read_text()) if plan_path.is_file() else {}).get("splits_from", str(splits_path))
    elif splits is not None:
        folds, origin = read_splits(splits), f"given: {splits}"
    else:
        pool = reader.cv_pool()
        groups_file = groups or find_groups_file(reader.root)
        group_of, grouping = case_groups(pool, groups_file, reader)
        folds = make_folds(pool, k, cfg.data.split_seed, group_of)
        origin = f"made from {len(pool)} cases of split {data.train_split!r} (seed {cfg.data.split_seed}; {grouping})"
    if len(folds) != k:
        raise MedsegError(f"{splits or splits_path}: has {len(folds)} folds, not --folds {k}")
    _check_no_test_cases(reader, data.test_split, folds, splits or splits_path)
    cv_dir.mkdir(parents=True, exist_ok=True)
    if not splits_path.is_file():
        write_splits(splits_path, folds)
    if not plan_path.is_file():
        plan = {"folds": k, "recipe": cfg.name, "splits": SPLITS_FILE, "splits_from": origin,
                "config": _plan_config(cfg)}
        atomic_write_text(plan_path, json.dumps(plan, indent=2) + "\n")
    return folds


def _check_no_test_cases(reader: Any, test_split: str, folds: Folds, source: Path) -> None:
    try:
        test = set(reader.ids(test_split))
    except MedsegError:  # a data set without a test split
        return
    leaked = sorted({c for f in folds for c in f["train"] + f["val"]} & test)
    if leaked:
        raise MedsegError(f"{source}: case {leaked[0]!r} (and {len(leaked) - 1} more) of the test split {test_split!r} "
                          "is in the folds; the test split stays out of cross-validation")


def fold_config(cfg: Config, cv_dir: Path, fold: int) -> Config:
    """``cfg`` training fold ``fold``: ``data.splits_file`` + ``data.fold`` replace its train / val splits."""
    data = cfg.data.model_copy(update={"splits_file": str(cv_dir / SPLITS_FILE), "fold": fold})
    return cfg.model_copy(update={"data": data})


def fold_status(run_dir: Path) -> str:
    """``done``, ``resume`` (a ``last.ckpt`` to continue), ``restart`` (a folder without one), ``diverged`` or ``new``."""
    summary = run_dir / "summary.json"
    status = None
    if summary.is_file():
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, ValueError):
            status = None
    if status in FINISHED:
        return "done"
    if status == "diverged":
        return "diverged"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    if run_dir.exists() and any(run_dir.iterdir()):
        return "restart"
    return "new"


def train_fold(cfg: Config, cv_dir: Path, fold: int) -> str:
    """Train (or resume, or skip) fold ``fold``; returns what was done: trained, resumed or skipped."""
    from medseg.engine.train import fit

    run_dir = fold_dir(cv_dir, fold)
    status = fold_status(run_dir)
    if status == "done":
        _log.info("fold %d: finished earlier (%s), skipped", fold, run_dir)
        return "skipped"
    if status == "diverged":
        raise MedsegError(f"{run_dir}: fold {fold} diverged (summary.json); lower optim.lr or set "
                          "trainer.gradient_clip_val in a new CV folder")
    if status == "resume":
        _log.info("fold %d: resuming the interrupted run in %s", fold, run_dir)
        fit(None, resume=run_dir)
        return "resumed"
    if status == "restart":
        _log.warning("fold %d: %s stopped before its first checkpoint; starting it again", fold, run_dir)
    _log.info("fold %d: training into %s", fold, run_dir)
    fit(fold_config(cfg, cv_dir, fold), out=run_dir, overwrite=status == "restart")
    return "trained"


def default_cv_dir(cfg: Config, k: int) -> Path:
    """``runs/<recipe>-cv<K>``: the same for every ``--fold`` of one experiment (no time stamp)."""
    return Path("runs") / f"{cfg.name}-cv{k}"


def train_cv(cfg: Config, *, folds: int, fold: int | None = None, out: Path | None = None,
             splits: Path | None = None, groups: Path | None = None,
             device: str = "cpu") -> tuple[Path, dict[str, Any] | None]:
    """Train fold ``fold`` (None: every fold, in order) of a ``folds``-fold cross-validation of ``cfg``.

    Returns the CV folder and, once every fold is trained, the CV summary (:func:`write_cv_summary`), else None.
    """
    from medseg.engine.safety import is_ddp_worker

    t = cfg.trainer
    if fold is None and (str(t.devices) not in ("1", "auto") or t.num_nodes > 1):
        raise MedsegError("--fold all trains on one device; with several devices (DDP) train one fold per command: "
                          "--fold 0, --fold 1, ...")
    cv_dir = Path(out) if out is not None else default_cv_dir(cfg, folds)
    prepare_cv(cfg, cv_dir, folds, splits=splits, groups=groups)
    for i in range(folds) if fold is None else [fold]:
        train_fold(cfg, cv_dir, i)
    if is_ddp_worker():  # rank 0 writes the summary
        return cv_dir, None
    if any(fold_status(fold_dir(cv_dir, i)) != "done" for i in range(folds)):
        return cv_dir, None
    return cv_dir, write_cv_summary(cv_dir, device=device)


# ----------------------------------------------------------------------------------------- summary
class FoldRouter:
    """A predictor that sends each case to the fold model that did not train on it (out-of-fold)."""

    def __init__(self, predictors: list[Any], folds: Folds) -> None:
        self.predictors = predictors
        self.cfg = predictors[0].cfg
        self.fold_of = {c: i for i, f in enumerate(folds) for c in f["val"]}

    def predict_case(self, case: Any) -> Any:
        return self.predictors[self.fold_of[case.id]].predict_case(case)


def eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation summary, flat: each metric's average, per class (when several), pooled, polyp."""
    out: dict[str, float] = {}
    metrics = summary.get("metrics", [])
    for m in metrics:
        out[m] = summary["average"][m]["mean"]
    classes = summary.get("classes", {})
    names = summary.get("class_names") or []
    if len(classes) > 1:
        for c, entry in classes.items():
            name = names[int(c)] if not entry.get("group") and int(c) < len(names) else entry["name"]
            for m in metrics:
                out[f"{m} [{name}]"] = entry[m]["mean"]
    for m, v in (summary.get("pooled") or {}).get("average", {}).items():
        out[f"pooled {m}"] = v["mean"]
    for name, group in (summary.get("class_groups") or {}).items():
        for m, v in group.items():
            if isinstance(v, dict) and "mean" in v:
                out[f"{m} [{name}]"] = v["mean"]
    for name, v in (summary.get("polyp") or {}).items():
        if isinstance(v, (int, float)):
            out[f"polyp {name}"] = float(v)
    return out


def validation_metrics(run_dir: Path) -> dict[str, float]:
    """From a run's ``summary.json``: the best validation score and the last validated epoch's loss and Dice."""
    s = json.loads((run_dir / "summary.json").read_text())
    out: dict[str, float] = {}
    if s.get("best_val") is not None:
        out[f"validation best {s.get('val_metric', 'dice')}"] = float(s["best_val"])
    validated = [r for r in s.get("history", []) if "val/loss" in r or "val/dice" in r]
    if validated:
        for key in ("val/loss", "val/dice"):
            if key in validated[-1]:
                out[f"validation last {key[4:]}"] = float(validated[-1][key])
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else math.nan


def write_cv_summary(cv_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """Evaluate each fold on its val cases and all out-of-fold predictions together; write ``cv_summary.{json,md}``."""
    from medseg.config import resolve_mode, resolve_protocol
    from medseg.data.readers import build_reader
    from medseg.engine.evaluate import _holds_volumes, eval_tag, evaluate_split, prepare_eval_dir
    from medseg.engine.predict import Predictor

    plan = json.loads((cv_dir / CV_FILE).read_text())
    folds = read_splits(cv_dir / SPLITS_FILE)
    runs = [fold_dir(cv_dir, i) for i in range(len(folds))]
    predictors = [Predictor.from_run(r, device=device) for r in runs]
    cfg = predictors[0].cfg
    reader = build_reader(cfg.data.model_copy(update={"splits_file": None}))
    oof_ids = [c for f in folds for c in f["val"]]
    protocol = resolve_protocol(cfg.eval.protocol, volume=_holds_volumes(reader, oof_ids))
    mode = resolve_mode(cfg.eval.mode, protocol)
    tag = eval_tag(protocol, mode, tta=cfg.eval.tta, aggregate=cfg.eval.aggregate)
    val_name = cfg.data.val_split or "val"
    per_fold: list[dict[str, Any]] = []
    for i, (run, pred, f) in enumerate(zip(runs, predictors, folds)):
        out = prepare_eval_dir(run / "eval" / f"{val_name}-{tag}")
        s = evaluate_split(pred, reader, f["val"], split=val_name, mode=mode, protocol=protocol, out=out)
        per_fold.append({"fold": i, "run": run.name, "train_cases": len(f["train"]), "val_cases": len(f["val"]),
                         "evaluation": str(out.relative_to(cv_dir)), "failed": s["failed"],
                         "metrics": {**validation_metrics(run), **eval_metrics(s)}})
    out = prepare_eval_dir(cv_dir / "eval" / f"oof-{tag}")
    oof = evaluate_split(FoldRouter(predictors, folds), reader, oof_ids, split="oof", mode=mode, protocol=protocol,
                         out=out)
    names = list(dict.fromkeys(k for f in per_fold for k in f["metrics"]))
    mean = {}
    for k in names:
        m, sd = _mean_sd([f["metrics"].get(k, math.nan) for f in per_fold])
        mean[k] = {"mean": m, "sd": sd}
    summary: dict[str, Any] = {
        "folds": len(folds), "recipe": plan.get("recipe"), "model": cfg.model.name, "splits": SPLITS_FILE,
        "splits_from": plan.get("splits_from"), "protocol": protocol, "mode": mode,
        "sd": "sample standard deviation over the folds (ddof=1)",
        "per_fold": per_fold, "mean": mean,
        "oof": {"cases": oof["cases"], "failed": oof["failed"], "evaluation": str(out.relative_to(cv_dir)),
                "metrics": eval_metrics(oof)},
    }
    summary["markdown"] = cv_markdown(summary)
    atomic_write_text(cv_dir / "cv_summary.json", json.dumps(json_safe({k: v for k, v in summary.items()
                                                                        if k != "markdown"}), indent=2) + "\n")
    atomic_write_text(cv_dir / "cv_summary.md", summary["markdown"])
    return summary


def _fmt(v: float | None, name: str) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    percent = name.split(" [")[0].split()[-1] in ("dice", "iou", "precision", "recall", "specificity", "mDice", "mIoU")
    return f"{100 * v:.2f}" if percent and "loss" not in name else f"{v:.4f}"


def cv_markdown(summary: dict[str, Any]) -> str:
    """One row per metric: each fold, mean ± sd over the folds, and the out-of-fold evaluation."""
    folds = summary["per_fold"]
    head = ["Metric"] + [f"fold {f['fold']}" for f in folds] + ["mean ± sd", "out-of-fold"]
    lines = [f"# {summary['folds']}-fold cross-validation: {summary['recipe']} ({summary['model']})", "",
             f"Folds: `{summary['splits']}` ({summary['splits_from']}); evaluation: {summary['protocol']} protocol, "
             f"{summary['mode']} mode; overlap metrics in %; sd over the folds (ddof=1).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, ms in summary["mean"].items():
        if " [" in name and not name.startswith(("dice [", "pooled dice [")):
            continue  # per-class rows of the other metrics: in cv_summary.json
        cells = [_fmt(f["metrics"].get(name), name) for f in folds]
        both = _fmt(ms["mean"], name) + ("" if not math.isfinite(ms["sd"]) else f" ± {_fmt(ms['sd'], name)}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {both} | {_fmt(summary['oof']['metrics'].get(name), name)} |")
    lines += ["", "Per-class rows of metrics other than Dice: `cv_summary.json`.",
              "", f"Out-of-fold: {summary['oof']['cases']} cases, each predicted by the fold that did not train on it "
              f"(`{summary['oof']['evaluation']}`)."]
    return "\n".join(lines) + "\n"
