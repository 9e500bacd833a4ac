"""Evaluate a run on one or several splits: per-image or volume-wise metrics, or the polyp protocol.

The per-class tables also score each ``eval.label_groups`` entry (the union of its labels) as
an extra binary class named by the group (MDA-U-Net's foreground organ ∪ tumour); groups appear in
every table but not in the average over labels.

- ``image``: each 2D case is predicted at the training size, resized back to its own size, and
  scored per class (Dice, IoU, HD95, ASD, precision, recall, specificity).
- ``volume``: every slice of a volume is predicted in batches, resized back and stacked; the
  metrics are computed on the 3D volume (TransUNet's protocol), in voxels unless
  ``eval.use_spacing`` (then in mm from the volume's spacing).
- ``polyp``: M2SNet/PraNet's table (mDice and mIoU at 0.5 and over PraNet's 256 thresholds, Fwβ,
  Sα, mean and max Eφ, MAE, and a last, separately labelled column with MSNet's own soft Dice of
  ``utils/metric.py``; :mod:`medseg.metrics.polyp`). Every probability map is **min-max
  normalised per image before all polyp metrics**, the 0.5-threshold Dice/IoU included, because
  the published numbers were computed that way (NOTES §2, §5.3): PraNet's ``MyTest.py`` saves
  min-max normalised maps, and MSNet/M2SNet's ``metric.py`` min-max normalises each saved map.
- ``auto``: ``volume`` for volume cases, else ``image`` (the polyp recipes set ``eval.protocol: polyp``).

Empty-mask rule (``eval.mode``, :func:`medseg.config.resolve_mode`): ``auto`` is ``paper``
(TransUNet's rule) for the ``volume`` protocol and ``strict`` for per-image evaluation (``image``,
``polyp``); ``paper`` / ``strict`` can always be asked for. Training validation uses the same rule.
``eval.aggregate: pooled`` adds Dice/IoU/precision/recall/specificity from TP/FP/FN summed over the
whole split (``summary["pooled"]``, and the paper row's Dice/IoU); ``eval.class_groups`` adds each
group's mean class score (``summary["class_groups"]``, extra paper-row columns).

One split goes to ``RUN_DIR/eval/<split>-<protocol>-<mode>[-tta][-pooled]/`` (:func:`eval_tag`),
so evaluations with different settings never share a folder: ``cases.csv`` (per case and class),
``summary.json`` (which records split, protocol, mode, tta and aggregate) and ``table.md`` (mean ±
std per class and overall); the polyp protocol adds ``polyp.csv`` (per image) and ``polyp.md``.
A folder (default or ``--out``) that already holds evaluation results gets a one-line warning and
loses those files before this evaluation writes its own (:func:`prepare_eval_dir`): the files in
a folder always come from one evaluation.

Several splits (:func:`expand_splits`: ``--split CVC-300,Kvasir``, or ``--split test`` with the
PraNet layout, which means every ``TestDataset/<set>``) go to ``RUN_DIR/eval/<name>-<tag>/``
(``<name>`` is ``test`` or ``CVC-300+Kvasir``): one sub-folder per split with the files above, plus
a combined ``polyp.md`` (one row per split), ``table.md`` and ``summary.json`` (``sets``: each
split's summary).

``overrides`` (``medseg evaluate --set key=value``) change ``data.*`` and ``eval.*`` keys of the run's
stored config, e.g. to evaluate a model trained on the built-in 2D PNG slices (windowed to
[-160, 240] HU) volume-wise on the HU volumes: ``--set data.format=nnunet_raw --set
"data.normalize={kind: window, window: [-160, 240]}"``.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import (  # noqa: F401
    FIXED_BY_MODEL,
    Config,
    ConfigError,
    apply_overrides,
    check_run_overrides,
    parse_override,
    resolve_mode,
    resolve_protocol,
    run_config_with_overrides,
    validate,
)
from medseg.engine.predict import find_checkpoint
from medseg.utils import MedsegError, atomic_write_text, check_output_dir, printable

_log = logging.getLogger(__name__)


def check_eval_overrides(overrides: list[str]) -> None:
    """``evaluate --set`` changes only ``data.*`` and ``eval.*`` keys, and not those the model fixes."""
    check_run_overrides(overrides, "evaluate")


def with_overrides(cfg: Config, overrides: list[str], where: str) -> Config:
    """The run's config with ``evaluate --set`` overrides applied and validated."""
    return run_config_with_overrides(cfg, overrides, where, "evaluate")


def class_names_for(cfg: Any, reader: Any) -> list[str]:
    """Class names (background first): the recipe's, else the data set's (dataset.json, ACDC, Synapse)."""
    for names in (cfg.data.class_names, getattr(reader, "class_names", None)):
        if names and len(names) == cfg.data.num_classes:
            return list(names)
    return ["background"] + [f"class{c}" for c in range(1, cfg.data.num_classes)]


def evaluate_run(
    run_dir: str | Path | list[Path],
    *,
    data: str | Path | None = None,
    split: str | None = None,
    mode: str | None = None,
    protocol: str | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    save_predictions: bool = False,
    max_cases: int | None = None,
    fast: bool | None = None,
    compile: bool = False,
    overrides: list[str] | None = None,
    fail_fast: bool = False,
    allow_nonfinite: bool = False,
    precision: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s model on ``split`` of ``data`` (default: the training data's root).

    ``split`` may name several splits (:func:`expand_splits`); they are then evaluated one by one
    and combined (see the module docstring). ``run_dir`` is a run folder or an exported ``.onnx``
    file (whose default output folder is ``<file without .onnx>-eval/``), or a list of them and
    cross-validation folders: their ensemble (:func:`ensemble_eval_folder` names its output folder);
    ``fast`` / ``compile`` /
    ``precision`` as in :class:`~medseg.engine.predict.Predictor`;
    ``overrides``: ``key=value`` items applied to the run's ``data.*`` / ``eval.*`` config;
    ``fail_fast`` / ``allow_nonfinite`` as in :func:`evaluate_split` (failed cases: ``summary["failed"]``).
    """
    from medseg.data.readers import build_reader
    from medseg.engine.ensemble import EnsemblePredictor, open_predictor

    runs = [Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    run_dir = runs[0]
    check_eval_overrides(overrides or [])
    predictor = open_predictor(runs, checkpoint=checkpoint, device=device, fast=fast, compile=compile,
                               precision=precision, overrides=overrides, command="evaluate")
    ensemble = isinstance(predictor, EnsemblePredictor)
    cfg = predictor.cfg
    dcfg = cfg.data.model_copy(update={"root": str(data)}) if data else cfg.data
    if ensemble:  # the data's own splits: a fold's val list is a training list of the other folds
        dcfg = dcfg.model_copy(update={"splits_file": None})
    if not dcfg.root or not Path(dcfg.root).exists():
        raise MedsegError(f"data folder not found: {dcfg.root} (pass --data DIR)")
    split = split or dcfg.test_split
    reader = build_reader(dcfg)
    splits, several = expand_splits(reader, split)
    protocol = protocol or cfg.eval.protocol
    protocol = resolve_protocol(protocol, volume=protocol == "auto" and _holds_volumes(reader, reader.ids(splits[0])))
    mode = resolve_mode(mode or cfg.eval.mode, protocol)
    base = run_dir.with_name(run_dir.stem + "-eval") if run_dir.is_file() else run_dir / "eval"
    info: dict[str, Any] = {"checkpoint": checkpoint, "data": str(dcfg.root)}
    prefix = ""
    if ensemble:
        base, prefix = ensemble_eval_folder(runs)
        info["ensemble"] = predictor.names  # type: ignore[union-attr]
    elif run_dir.is_dir() and checkpoint == "best" and find_checkpoint(run_dir, checkpoint).stem == "last":
        info.update(checkpoint="last", checkpoint_note="no best.ckpt (trained without validation): last epoch")
    if ensemble:
        from medseg.engine.ensemble import check_unseen

        check_unseen(predictor, {cid for s in splits for cid in split_ids(reader, s, max_cases)})
    options = {"save_predictions": save_predictions, "fail_fast": fail_fast, "allow_nonfinite": allow_nonfinite}
    tag = eval_tag(protocol, mode, tta=cfg.eval.tta, aggregate=cfg.eval.aggregate)
    if several:
        name = "+".join(split_folder_name(s) for s in split.split(",") if s.strip())
        out = prepare_eval_dir(Path(out_dir) if out_dir else base / f"{prefix}{name}-{tag}")
        combined = evaluate_splits(predictor, reader, splits, mode=mode, protocol=protocol, out=out,
                                   max_cases=max_cases, info=info, **options)
        if not prefix:  # an ensemble's evaluation belongs to no single run's model card
            update_model_card(run_dir, combined, out)
        return combined
    split = splits[0]
    out = prepare_eval_dir(Path(out_dir) if out_dir else base / f"{prefix}{split_folder_name(split)}-{tag}")
    summary = evaluate_split(predictor, reader, split_ids(reader, split, max_cases), split=split, mode=mode,
                             protocol=protocol, out=out, **options)
    summary.update(info)
    atomic_write_text(out / "summary.json", json.dumps(_without_markdown(summary), indent=2, default=float))
    update_model_card(run_dir, summary, out)
    return summary


def update_model_card(run_dir: Path, summary: dict[str, Any], out: Path) -> None:
    """Add (or replace) this evaluation's block in the run's ``README.md`` model card; a run folder only.

    The block is named by the evaluation folder (relative to the run), so re-evaluating with the same
    settings replaces it and other settings add a block. A failure is a warning: the tables are written.
    """
    if not run_dir.is_dir():
        return
    from medseg.engine.model_card import evaluation_block, write_model_card

    try:
        name = out.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        name = str(out)
    try:
        write_model_card(run_dir, evaluation=(name, evaluation_block(name, summary, out, run_dir)))
    except Exception as err:  # noqa: BLE001 - the evaluation's own files are written; the card is a summary
        _log.warning("could not update %s: %s", run_dir / "README.md", err)


def ensemble_eval_folder(runs: list[Path]) -> tuple[Path, str]:
    """(parent folder, name prefix) of an ensemble's evaluation folder ``<parent>/<prefix><split>-<tag>``.

    One cross-validation folder: ``CV_DIR/eval/ensemble-<split>-<tag>`` (its folds are the ensemble).
    Otherwise the first run's evaluation folder with a prefix naming the members,
    ``RUN1/eval/ensemble-<id>-<split>-<tag>`` (``<id>``: :func:`medseg.engine.ensemble.ensemble_id`, 8 hex
    digits of the members' paths), so no two ensembles, nor the run's own evaluations, share a folder.
    """
    from medseg.engine.ensemble import ensemble_id, expand_runs, is_cv_dir

    first = runs[0]
    if len(runs) == 1 and is_cv_dir(first):
        return first / "eval", "ensemble-"
    base = first.with_name(first.stem + "-eval") if first.is_file() else first / "eval"
    return base, f"ensemble-{ensemble_id(expand_runs(runs))}-"


def eval_tag(protocol: str, mode: str, *, tta: bool = False, aggregate: str = "case") -> str:
    """``<protocol>-<mode>[-tta][-pooled]``: the part of an evaluation folder's name after the split."""
    return f"{protocol}-{mode}" + ("-tta" if tta else "") + ("-pooled" if aggregate == "pooled" else "")


#: What an evaluation writes into its folder (and sub-folders of several splits): replaced on reuse.
EVAL_FILES = ("cases.csv", "cases.png", "summary.json", "table.md", "polyp.csv", "polyp.md")


def prepare_eval_dir(out: Path) -> Path:
    """Create ``out``; if it already holds evaluation results, warn (one line) and remove them.

    So a folder never mixes files of two evaluations (a stale ``polyp.csv`` next to a new
    ``table.md``): only the files :data:`EVAL_FILES` and ``predictions/`` an evaluation writes, in
    ``out`` and in its per-split sub-folders, are removed; anything else stays. A run folder
    (``checkpoints/``) is refused.
    """
    import shutil

    out = check_output_dir(out)
    if (out / "checkpoints").is_dir():
        raise MedsegError(f"{out}: is a run folder; pass an evaluation folder to --out (default RUN_DIR/eval/...)")
    folders = [out] + [d for d in sorted(out.iterdir()) if d.is_dir() and (d / "table.md").is_file()]
    if not ((out / "table.md").is_file() or (out / "cases.csv").is_file() or len(folders) > 1):
        return out
    _log.warning("%s already holds evaluation results: replacing them with this evaluation's", out)
    for d in folders:
        for name in EVAL_FILES:
            (d / name).unlink(missing_ok=True)
        if (d / "predictions").is_dir():
            shutil.rmtree(d / "predictions")
        if d != out and not any(d.iterdir()):
            d.rmdir()
    return out


def _holds_volumes(reader: Any, ids: list[str]) -> bool:
    """Whether the cases ``ids`` are volumes (asks the reader about the first readable one)."""
    for cid in ids[:5]:
        try:
            n = reader.num_slices(cid)
        except Exception:  # an unreadable case is reported when evaluated; ask the next one
            continue
        return n is not None and n > 1
    return False


def expand_splits(reader: Any, split: str) -> tuple[list[str], bool]:
    """The splits ``split`` names, and whether it names several (the combined layout).

    ``split`` is a name or comma-separated names (``CVC-300,Kvasir``). With the PraNet layout
    (a reader with ``test_sets()``), ``test`` means every ``TestDataset/<set>``, each evaluated on
    its own as PraNet and MSNet do, unless a set is itself named ``test``. Duplicates are dropped.
    """
    names = [s.strip() for s in split.split(",") if s.strip()]
    if not names:
        raise MedsegError(f"no split named in {split!r}")
    test_sets = list(reader.test_sets()) if hasattr(reader, "test_sets") else []
    out: list[str] = []
    for name in names:
        for s in test_sets if name == "test" and test_sets and "test" not in test_sets else [name]:
            if s not in out:
                out.append(s)
    return out, len(names) > 1 or out != names


def split_folder_name(split: str) -> str:
    """A folder name for a split: a list file's stem (``splits/pranet_test.txt`` -> ``pranet_test``)."""
    split = split.strip()
    return Path(split).stem if split.endswith(".txt") else split.replace("/", "_").replace("\\", "_")


def split_ids(reader: Any, split: str, max_cases: int | None = None) -> list[str]:
    """Case ids of ``split`` (the first ``max_cases`` when given)."""
    ids = reader.ids(split)
    return ids[:max_cases] if max_cases else ids


def evaluate_splits(
    predictor: Any,
    reader: Any,
    splits: list[str],
    *,
    mode: str,
    protocol: str,
    out: Path,
    save_predictions: bool = False,
    max_cases: int | None = None,
    info: dict[str, Any] | None = None,
    fail_fast: bool = False,
    allow_nonfinite: bool = False,
) -> dict[str, Any]:
    """Evaluate each split into ``out/<split>/`` and write the combined tables to ``out``.

    The combined ``polyp.md`` has one row per split (polyp protocol); ``table.md`` adds one
    paper-style row per split; ``summary.json`` holds each split's summary under ``sets``.
    """
    ids = {s: split_ids(reader, s, max_cases) for s in splits}  # unknown splits fail before any work
    sets: dict[str, dict[str, Any]] = {}
    for s in splits:
        sub = out / split_folder_name(s)
        summary = evaluate_split(predictor, reader, ids[s], split=s, mode=mode, protocol=protocol, out=sub,
                                 save_predictions=save_predictions, fail_fast=fail_fast,
                                 allow_nonfinite=allow_nonfinite)
        summary.update(info or {})
        atomic_write_text(sub / "summary.json", json.dumps(_without_markdown(summary), indent=2, default=float))
        sets[s] = summary
    combined = combine_summaries(sets, mode=mode)
    combined.update({**(info or {}), "out_dir": str(out)})
    if "polyp" in combined:
        atomic_write_text(out / "polyp.md", combined["polyp_markdown"])
    atomic_write_text(out / "table.md", combined["markdown"] + "\n")
    atomic_write_text(out / "summary.json", json.dumps(_without_markdown(combined), indent=2, default=float))
    return combined


def combine_summaries(sets: dict[str, dict[str, Any]], *, mode: str) -> dict[str, Any]:
    """One summary for several evaluated splits (see :func:`evaluate_splits`)."""
    from medseg.metrics import polyp_markdown

    first = next(iter(sets.values()))
    rows = {s: paper_row_markdown(v, v["class_names"]).splitlines() for s, v in sets.items() if v["cases"]}
    markdown = "no case could be evaluated"
    if rows:
        head, sep = next(iter(rows.values()))[:2]
        markdown = "\n".join(["| Dataset " + head, "|---" + sep] + [f"| {s} " + r[2] for s, r in rows.items()])
    combined: dict[str, Any] = {
        "splits": list(sets),
        "protocol": first["protocol"],
        "mode": mode,
        "tta": first.get("tta", False),
        "aggregate": first.get("aggregate", "case"),
        "cases": sum(v["cases"] for v in sets.values()),
        "failed": [line for v in sets.values() for line in v["failed"]],
        "seconds": round(sum(v["seconds"] for v in sets.values()), 2),
        "sets": {s: _without_markdown(v) for s, v in sets.items()},
    }
    polyp = {s: v["polyp"] for s, v in sets.items() if "polyp" in v}
    if polyp:
        combined["polyp"] = polyp
        combined["polyp_markdown"] = polyp_markdown(polyp)
        markdown = combined["polyp_markdown"] + "\n\n" + markdown
    combined["markdown"] = markdown
    return combined


def evaluate_split(
    predictor: Any,
    reader: Any,
    ids: list[str],
    *,
    split: str,
    mode: str,
    protocol: str,
    out: Path,
    save_predictions: bool = False,
    fail_fast: bool = False,
    allow_nonfinite: bool = False,
) -> dict[str, Any]:
    """Predict and score every case of ``ids``; write the tables to ``out``.

    ``predictor`` needs ``cfg`` and ``predict_case(case) -> (labels, probabilities)`` (a
    :class:`~medseg.engine.predict.Predictor`, or any object that behaves like one).
    ``cases.csv`` grows as the cases are scored (flushed after each), so nothing scored is lost to a
    later failure. A case that fails (unreadable, no label, NaN/Inf image unless ``allow_nonfinite``,
    label shape unlike the image's) is left out and listed in ``summary["failed"]`` (one line each);
    with ``fail_fast`` the first failure raises :class:`~medseg.utils.DataError`.
    """
    from medseg.data.base import check_image
    from medseg.engine.predict import guarded
    from medseg.metrics import MetricTable, class_group_means, confusion_counts, evaluate_case, pooled_summary
    from medseg.progress import progress_bar

    cfg = predictor.cfg
    num_classes = cfg.data.num_classes
    if not ids:
        raise MedsegError(f"split {split!r} is empty")
    if protocol == "polyp" and num_classes != 2:
        raise MedsegError("the polyp protocol is binary: this run has more than two classes")
    names = class_names_for(cfg, reader)
    check_output_dir(out)
    if protocol == "auto" or mode == "auto":
        volume = _holds_volumes(reader, ids)
        protocol = resolve_protocol(protocol, volume)
        mode = resolve_mode(mode, protocol)
    table = MetricTable(mode=mode, hd_method=cfg.eval.hd_method, distance_unit="mm" if cfg.eval.use_spacing else "voxel",
                        class_names=dict(enumerate(names)))  # cases.csv and summary.json name classes as the table
    polyp = None
    if protocol == "polyp":
        from medseg.metrics import PolypEvaluator

        polyp = PolypEvaluator(minmax=True)  # per-image min-max before every polyp metric (module docstring)
    groups = {g.name: list(g.labels) for g in cfg.eval.label_groups}
    pooled: dict[int, np.ndarray] | None = {} if cfg.eval.aggregate == "pooled" else None
    failures: list[str] = []

    def score(cid: str) -> None:
        case = reader.load(cid)
        if case.label is None:
            raise MedsegError(f"case {cid} of split {split!r} has no label: cannot evaluate")
        case.image = check_image(case.image, case.meta.get("image_path", cid), allow_nonfinite=allow_nonfinite)
        labels, probs = predictor.predict_case(case)
        spacing = case.spacing if cfg.eval.use_spacing else None
        rows = evaluate_case(labels, case.label, num_classes, spacing=spacing, mode=mode, hd_method=cfg.eval.hd_method,
                             label_groups=groups)
        if save_predictions:
            _save_prediction(labels, case, out / "predictions", num_classes)
        if polyp is not None:
            polyp.add(printable(cid), probs[0], case.label)
        table.add(printable(cid), rows)
        if pooled is not None:
            for c, n in confusion_counts(labels, case.label, num_classes, groups).items():
                pooled[c] = pooled[c] + n if c in pooled else n

    start = time.perf_counter()
    columns: list[str] | None = None
    with open(out / "cases.csv", "w", encoding="utf-8", errors="backslashreplace") as log, \
            progress_bar(f"evaluate {split}", len(ids)) as bar:  # closed before a --fail-fast error is printed
        for cid in ids:
            n = len(table.rows)
            guarded(cid, partial(score, cid), failures, fail_fast=fail_fast)
            bar.advance()
            if len(table.rows) > n:
                log.write(table.csv_text(table.rows[n:], columns, header=columns is None))
                log.flush()
                columns = columns or table.columns()
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"split": split, "protocol": protocol, "mode": mode, "tta": cfg.eval.tta,
                               "aggregate": cfg.eval.aggregate, "cases": len(table.cases), "failed": failures,
                               "seconds": round(seconds, 2)}
    if not table.cases:
        summary.update({"markdown": f"no case of split {split!r} could be evaluated", "out_dir": str(out)})
        atomic_write_text(out / "summary.json", json.dumps(_without_markdown(summary), indent=2, default=float))
        return summary
    table.to_csv(out / "cases.csv")
    plot_cases(table, names, groups, out / "cases.png", title=f"{split}: Dice per case ({protocol} protocol, {mode} rule)")
    summary.update(table.summary())
    summary.update({"class_names": names, "label_groups": groups})
    if pooled is not None:
        ids_to_names = {c: n for c, n in enumerate(names)} | {num_classes + i: g for i, g in enumerate(groups)}
        summary["pooled"] = pooled_summary(pooled, ids_to_names, groups=range(num_classes, num_classes + len(groups)))
    class_groups = {g.name: list(g.labels) for g in cfg.eval.class_groups}
    if class_groups:
        summary["class_groups"] = class_group_means((summary.get("pooled") or summary)["classes"], class_groups)
    markdown = paper_row_markdown(summary, names)
    if pooled is not None:
        markdown += "\n\n" + pooled_markdown(summary["pooled"])
    markdown += "\n\n" + table.to_markdown(names[1:])
    if polyp is not None:
        from medseg.metrics import polyp_markdown

        presults = polyp.results()
        polyp.to_csv(out / "polyp.csv")
        pmd = polyp_markdown({split: presults})
        atomic_write_text(out / "polyp.md", pmd)
        summary["polyp"] = presults
        markdown = pmd + "\n\n" + markdown
    summary["markdown"] = markdown
    summary["out_dir"] = str(out)
    atomic_write_text(out / "summary.json", json.dumps(_without_markdown(summary), indent=2, default=float))
    atomic_write_text(out / "table.md", markdown + "\n")
    return summary


def plot_cases(table: Any, names: list[str], groups: dict[str, list[int]], path: Path, title: str) -> Path:
    """``cases.png``: per-class box plot of the per-case Dice, every case a point (label groups after the classes)."""
    from medseg.engine.visualize import cases_figure, save_figure

    label = {c: n for c, n in enumerate(names)} | {len(names) + i: g for i, g in enumerate(groups)}
    values: dict[str, list[float]] = {}
    for row in table.rows:
        values.setdefault(label.get(int(row["class"]), f"class{row['class']}"), []).append(float(row["dice"]))
    return save_figure(cases_figure(values, "dice", title=title), path)


def paper_row_markdown(summary: dict[str, Any], names: list[str]) -> str:
    """The papers' one-row layout: average Dice, HD95 and mIoU, then each class's Dice (in %).

    Synapse tables (TransUNet, MGRAD-UNet, SNet) read "DSC | HD95 | mIoU | Aorta | Gallbladder | ...";
    ACDC tables read "Average | RV | Myo | LV". Label groups add a Dice column each, after the classes,
    then class groups (SNet's Tissue / Small / Large: mean Dice of their classes). With
    ``eval.aggregate: pooled`` the Dice / IoU cells are the pooled ones; HD95 stays per case.
    """

    def pct(m: dict[str, Any]) -> str:
        v = m.get("mean")
        return "-" if v is None or v != v else f"{100 * v:.2f}"

    pooled = summary.get("pooled")
    over = pooled or summary  # Dice / IoU: pooled over the split's pixels, or the mean over cases
    avg = over["average"]
    head = ["Dice (%, pooled)" if pooled else "Dice (%)", "HD95", "mIoU (%)"] + [f"{n} Dice" for n in names[1:]]
    hd = summary["average"].get("hd95", {}).get("mean")
    cells = [pct(avg["dice"]), "-" if hd is None or hd != hd else f"{hd:.2f}", pct(avg.get("iou", {}))]
    cells += [pct(over["classes"][str(c)]["dice"]) for c in range(1, len(names)) if str(c) in over["classes"]]
    groups = [e for e in over["classes"].values() if e.get("group")]
    head += [f"{e['name']} Dice" for e in groups]
    cells += [pct(e["dice"]) for e in groups]
    class_groups = summary.get("class_groups") or {}
    head += [f"{name} Dice" for name in class_groups]
    cells += [pct(g.get("dice", {})) for g in class_groups.values()]
    return "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n| " + " | ".join(cells) + " |"


def pooled_markdown(pooled: dict[str, Any]) -> str:
    """The pooled ("pixel-wise") overlap metrics: one row per metric, ``Average`` then each class (in %)."""
    from medseg.metrics import OVERLAP_METRICS

    entries = list(pooled["classes"].values())
    head = ["Pooled (%)", "Average"] + [e["name"] for e in entries]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in OVERLAP_METRICS:
        vals = [pooled["average"][m]["mean"]] + [e[m]["mean"] for e in entries]
        lines.append(f"| {m} | " + " | ".join("-" if v != v else f"{100 * v:.2f}" for v in vals) + " |")
    return "\n".join(lines) + "\n\n_pooled: TP/FP/FN summed over every pixel of the split; groups not in Average_"


def _without_markdown(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("markdown", "polyp_markdown")}


def _save_prediction(labels: np.ndarray, case: Any, out: Path, num_classes: int) -> None:
    if labels.ndim == 3:
        from medseg.data.nnunet_raw import write_array_nifti, write_like

        if case.meta.get("affine") is not None:
            write_like(labels.astype(np.uint8), case, out / f"{case.id}.nii.gz")
        else:
            write_array_nifti(labels.astype(np.uint8), out / f"{case.id}.nii.gz", spacing=case.spacing)
    else:
        from medseg.engine.predict import mask_to_png_array
        from medseg.engine.visualize import save_png

        save_png(mask_to_png_array(labels, num_classes), out / f"{case.id}.png")
