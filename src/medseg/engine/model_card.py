"""The run's ``README.md``: a model card written by ``medseg train`` and extended by ``medseg evaluate``.

Sections: data, recipe (with a pointer to its protocol card), training, metrics with their rules,
intended use and limits, then one block per evaluation. Everything but the evaluation blocks is
rebuilt from the run folder (``config.yaml``, ``summary.json``) each time; evaluation blocks are
kept between ``<!-- medseg:eval NAME -->`` and ``<!-- /medseg:eval -->`` and replaced by name.
A ``README.md`` that medseg did not write (no :data:`MARKER` on its first line) is never touched.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from medseg.utils import atomic_write_text

_log = logging.getLogger(__name__)

#: First line of every card medseg writes: a ``README.md`` without it belongs to the user.
MARKER = "<!-- medseg model card: written by `medseg train`, extended by `medseg evaluate`; edits are replaced -->"
_EVAL_BLOCK = re.compile(r"<!-- medseg:eval (?P<name>.+?) -->\n.*?<!-- /medseg:eval -->\n?", re.S)

MODE_RULES = {
    "paper": "TransUNet's `calculate_metric_percase`: a class the prediction misses scores Dice 0 and HD95 0; "
             "predicting a class absent from the truth scores Dice 1",
    "strict": "both masks empty: Dice 1; exactly one empty: Dice 0; distances of an empty mask are left out "
              "of the means (and counted)",
}


def card_path(run_dir: Path) -> Path:
    return Path(run_dir) / "README.md"


def is_ours(path: Path) -> bool:
    """Whether ``path`` is missing or a card medseg wrote (its first line is :data:`MARKER`)."""
    if not path.exists():
        return True
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\n") == MARKER
    except (OSError, UnicodeDecodeError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _pct(v: Any) -> str:
    return "-" if v is None or v != v else f"{100 * float(v):.2f}"


def _data_section(cfg: Any, summary: dict[str, Any]) -> list[str]:
    d = cfg.data
    names = d.class_names or ["background"] + [f"class{c}" for c in range(1, d.num_classes)]
    source = f"built-in `{d.builtin}` (seed {d.builtin_seed})" if d.builtin else f"`{d.root}`"
    counts = summary.get("data") or {}
    lines = ["## Data", "",
             f"- source: {source}, format `{d.format}`",
             f"- cases: {counts.get('train_cases', '?')} training (split `{d.train_split}`), "
             f"{counts.get('val_cases', 0)} validation (split `{d.val_split}`); test split `{d.test_split}`",
             f"- input: {d.in_channels} channel(s), resized to {d.size[0]}x{d.size[1]}, normalisation "
             f"`{d.normalize.kind}`" + (f" {list(d.normalize.window)}" if d.normalize.window else ""),
             f"- classes ({d.num_classes}, background first): {', '.join(names)}"]
    for kind, norm in d.inputs.normalize.items():
        lines.append(f"- {kind} inputs are normalised with `{norm.kind}`"
                     + (f" {list(norm.window)}" if norm.window else "") + " at predict/evaluate time")
    return lines + [""]


def _recipe_section(cfg: Any, summary: dict[str, Any]) -> list[str]:
    from medseg.config import recipe_names

    o, s, t = cfg.optim, cfg.schedule, cfg.trainer
    card = (f"`docs/protocols/{cfg.name}.md` in the medseg repository (every setting, its value and source); "
            f"`medseg recipes show {cfg.name}` prints the recipe" if cfg.name in recipe_names()
            else "none (not a built-in recipe): `config.yaml` is the whole recipe")
    terms = ", ".join(f"{x.weight:g} x {x.loss}({', '.join(x.outputs or [x.output or 'logits'])})"
                      for x in cfg.loss.terms)
    desc = re.split(r"(?<=[a-z0-9)]{3}[.])\s", " ".join(cfg.description.split()), maxsplit=1)[0]  # first sentence
    params = summary.get("params")
    lines = ["## Recipe", "",
             f"- recipe: `{cfg.name}`" + (f": {desc}" if desc else ""),
             f"- protocol card: {card}",
             f"- model: `{cfg.model.name}`" + (f", {params:,} parameters" if isinstance(params, int) else "")
             + (f", kwargs `{json.dumps(cfg.model.kwargs)}`" if cfg.model.kwargs else ""),
             f"- loss: {terms}",
             f"- optimiser: {o.name}, lr {o.lr:g}, weight decay {o.weight_decay:g}; schedule `{s.name}`",
             f"- training: {t.max_epochs} epoch(s) planned, batch {cfg.data.batch_size}, precision `{t.precision}`, "
             f"seed {cfg.seed}; augmentation `{cfg.data.augment.preset}`",
             "- full configuration: [config.yaml](config.yaml)", ""]
    return lines


def _training_section(cfg: Any, summary: dict[str, Any], run_dir: Path) -> list[str]:
    if not summary:
        return ["## Training", "", "No `summary.json` yet: training has not finished.", ""]
    best = summary.get("best_val")
    metric = summary.get("val_metric", cfg.trainer.val_metric)
    sizes = summary.get("checkpoint_bytes") or {}
    lines = ["## Training", "",
             f"- status: {summary.get('status', '?')}" + (f" ({summary['note']})" if summary.get("note") else ""),
             f"- {summary.get('epochs', '?')} epoch(s), {summary.get('steps', '?')} optimiser steps, "
             f"{summary.get('train_seconds', 0):.0f} s on `{summary.get('device', '?')}`"
             + (f", resumed {summary['resumed']} time(s)" if summary.get("resumed") else ""),
             f"- best validation {metric}: " + ("-" if best is None else f"{best:.4f}")
             + (" -> `checkpoints/best.ckpt`" if summary.get("best_checkpoint") else " (no validation: `last.ckpt`)"),
             "- checkpoints: " + (", ".join(f"{k}.ckpt {v / 1e6:.1f} MB" for k, v in sizes.items()) or "-")]
    if (run_dir / "curves.png").is_file():
        lines += ["", "![training curves](curves.png)"]
    if (run_dir / "overlays").is_dir():
        lines += ["", "Validation overlays (truth | prediction contours, per-image Dice in the title): `overlays/`."]
    return lines + [""]


def _metrics_section(cfg: Any) -> list[str]:
    from medseg.config import resolve_mode

    e = cfg.eval
    lines = ["## Metrics and their rules", "",
             f"- validation (picks `best.ckpt`): `val/{cfg.trainer.val_metric}`"
             + (", mean over cases of the mean foreground-class Dice" if cfg.trainer.val_metric == "dice" else ""),
             f"- evaluation protocol: `{e.protocol}`" + (" (`volume` for volume cases, else `image`)" if e.protocol == "auto" else ""),
             f"- empty-mask rule (`eval.mode: {e.mode}`):"]
    for mode in ("paper", "strict"):
        if e.mode in (mode, "auto"):
            when = "" if e.mode != "auto" else (" (volume protocol)" if mode == "paper" else " (per-image protocols)")
            lines.append(f"  - `{mode}`{when}: {MODE_RULES[mode]}")
    if e.mode == "auto":
        lines.append(f"  - this run's validation: `{resolve_mode(e.mode, e.protocol)}` for 2D cases")
    lines += [f"- HD95: `{e.hd_method}` definition, in {'mm (voxel spacing)' if e.use_spacing else 'voxels'}",
              f"- aggregation: `{e.aggregate}`" + (", test-time mirroring" if e.tta else ""), ""]
    return lines


def _limits_section(cfg: Any, summary: dict[str, Any]) -> list[str]:
    n = (summary.get("data") or {}).get("train_cases", "?")
    source = f"the built-in synthetic `{cfg.data.builtin}` data" if cfg.data.builtin else f"`{cfg.data.root}`"
    return ["## Intended use and limits", "",
            f"- Research use: comparing methods and protocols on data like its training data ({n} training "
            f"cases of {source}).",
            "- **Not for clinical use**: not a medical device, not validated for diagnosis or treatment.",
            "- Quality on other scanners, sites, modalities, intensity ranges or image sizes is unknown until "
            "measured with `medseg evaluate`; predict/evaluate warn when inputs fall far outside the training range.",
            ""]


def evaluation_block(name: str, summary: dict[str, Any], out_dir: Path, run_dir: Path) -> str:
    """One evaluation's block: where, which rules, the paper-style row, and links to its files."""
    try:
        where = out_dir.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        where = str(out_dir)
    avg = (summary.get("pooled") or summary).get("average", {})
    classes = (summary.get("pooled") or summary).get("classes", {})
    names = summary.get("class_names") or []

    def class_name(k: str, v: dict[str, Any]) -> str:
        return names[int(k)] if k.isdigit() and int(k) < len(names) else str(v.get("name", k))

    per_class = ", ".join(f"{class_name(k, v)} {_pct(v.get('dice', {}).get('mean'))}" for k, v in classes.items())
    hd = summary.get("average", {}).get("hd95", {}).get("mean")
    lines = [f"<!-- medseg:eval {name} -->", f"### {name}", "",
             f"- split `{summary.get('split', ', '.join(summary.get('splits', [])))}` of `{summary.get('data', '?')}`, "
             f"{summary.get('cases', 0)} case(s), checkpoint `{summary.get('checkpoint', 'best')}`",
             f"- protocol `{summary.get('protocol')}`, empty-mask rule `{summary.get('mode')}` "
             f"({MODE_RULES.get(summary.get('mode', ''), '')}), aggregation `{summary.get('aggregate', 'case')}`"
             + (", TTA" if summary.get("tta") else "")]
    if avg:
        lines.append(f"- mean Dice {_pct(avg.get('dice', {}).get('mean'))} %, mIoU {_pct(avg.get('iou', {}).get('mean'))} %"
                     + ("" if hd is None or hd != hd else f", HD95 {hd:.2f}"))
    if per_class:
        lines.append(f"- Dice per class (%): {per_class}")
    for set_name, sub in (summary.get("sets") or {}).items():
        sub_avg = (sub.get("pooled") or sub).get("average", {})
        lines.append(f"- `{set_name}`: {sub.get('cases', 0)} case(s), mean Dice {_pct(sub_avg.get('dice', {}).get('mean'))} %")
    if summary.get("failed"):
        lines.append(f"- {len(summary['failed'])} case(s) failed (see summary.json)")
    files = [f for f in ("table.md", "cases.csv", "cases.png", "summary.json") if (out_dir / f).is_file()]
    if files:
        lines.append("- files: " + ", ".join(f"[{f}]({where}/{f})" for f in files))
    if (out_dir / "cases.png").is_file():
        lines += ["", f"![per-case Dice]({where}/cases.png)"]
    return "\n".join(lines) + "\n<!-- /medseg:eval -->\n"


def write_model_card(run_dir: str | Path, evaluation: tuple[str, str] | None = None) -> Path | None:
    """(Re)write ``RUN_DIR/README.md``; ``evaluation`` = (name, block) adds or replaces that evaluation's block.

    Returns the path, or ``None`` (with a warning) when a ``README.md`` that medseg did not write is there.
    """
    from medseg.config import load_config

    run_dir = Path(run_dir)
    path = card_path(run_dir)
    if not is_ours(path):
        _log.warning("%s was not written by medseg: left as it is (no model card written)", path)
        return None
    cfg = load_config(str(run_dir / "config.yaml"))
    summary = _read_json(run_dir / "summary.json")
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    blocks = {m["name"]: m.group(0) for m in _EVAL_BLOCK.finditer(old)}
    if evaluation is not None:
        blocks[evaluation[0]] = evaluation[1]
    head = [MARKER, f"# {run_dir.name}: `{cfg.model.name}` trained with recipe `{cfg.name}`", "",
            "Model card of a medseg run. Load it with `medseg.load_run(\"<this folder>\")`, "
            "`medseg predict`, `medseg evaluate` or `medseg demo`.", ""]
    body = (head + _data_section(cfg, summary) + _recipe_section(cfg, summary) + _training_section(cfg, summary, run_dir)
            + _metrics_section(cfg) + _limits_section(cfg, summary))
    body += ["## Evaluation", ""]
    if blocks:
        body += ["\n".join(b.rstrip("\n") for b in blocks.values())]
    else:
        body += ["Not evaluated yet: `medseg evaluate` adds a block here."]
    return atomic_write_text(path, "\n".join(body) + "\n")
