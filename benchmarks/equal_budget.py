"""Equal wall-time budget: each paper model against the U-Net baseline on its paper's data family.

Every run trains through the ``medseg`` CLI for the same wall time (``trainer.max_time_s``), one after
the other on this machine, from scratch (the recipes' ``cpu`` presets: no ImageNet weights), then is
evaluated on the test split with the recipe's protocol. Each paper model is compared with the U-Net of
its family by ``medseg compare`` (per-case paired differences over the seeds: bootstrap CI, Wilcoxon p).

    python benchmarks/equal_budget.py --list
    python benchmarks/equal_budget.py polyp                       # 600 s x 2 seeds x 3 models
    python benchmarks/equal_budget.py polyp cardiac lesion --budget 600 --seeds 2
    python benchmarks/equal_budget.py polyp --only m2snet --seeds 1

Finished runs (a ``summary.json`` with status ``completed`` or ``stopped_early`` and an evaluation) are skipped, so an
interrupted benchmark continues where it stopped. Results: ``benchmarks/results/equal_budget.md`` and
``.json`` (rows of runs not re-run are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"

COVID = ["data.format=image_folder", "data.mask_dir=masks_multiclass", "data.num_classes=3",
         "data.class_names=[background, ground_glass, consolidation]", "data.normalize={kind: unit}",
         "data.train_split=train", "data.test_split=test", "data.val_fraction=0.1",
         "eval.protocol=image", "eval.mode=strict",
         "eval.label_groups=[{name: infection, labels: [1, 2]}]"]  # the recipe's group is KiTS's kidney ∪ tumour

#: the lesion U-Net baseline: MDA-U-Net's recipe, Dice + CE on the one output, widths 16-256
UNET_COVID = COVID + ["preset=cpu", "model.name=unet", "model.kwargs={features: [16, 32, 64, 128, 256, 16]}",
                      "loss.terms=[{loss: dice_ce, output: logits}]"]
#: the cardiac U-Net baseline: MGRAD-UNet's recipe and loss (0.3 CE + 0.7 Dice), one pass, widths 16-256
UNET_ACDC = ["preset=cpu", "model.name=unet", "strategy.name=single", "model.kwargs={features: [16, 32, 64, 128, 256, 16]}",
             "loss.terms=[{loss: dice_ce, output: logits, kwargs: {ce_weight: 0.3, dice_weight: 0.7}}]"]

#: family -> data, split, metric columns (key in the evaluation summary, label) and its runs
FAMILIES: dict[str, dict[str, Any]] = {
    "polyp": {
        "data": SHARED / "kvasir-seg",
        "split": "pranet_test",
        "about": "Every model trains on the 900 PraNet Kvasir training images (no validation carve-out; the last "
                 "weights are evaluated) at 128 px, in bf16-mixed with channels_last where the CPU has native bf16 "
                 "(the `cpu` presets), and is evaluated on the 100 PraNet test images at their own size.",
        "columns": [("polyp.dice", "mDice@0.5"), ("polyp.iou", "mIoU@0.5"), ("polyp.Sm", "Sα"), ("polyp.MAE", "MAE"),
                    ("average.recall", "recall"), ("average.specificity", "specificity")],
        "runs": {
            # all 900 training images and the last epoch, as the paper models' Kvasir presets (no 10 % carve-out)
            "unet": {"recipe": "unet_kvasir", "set": ["preset=cpu", "data.val_split=null"]},
            "msnet": {"recipe": "msnet_polyp", "set": ["preset=[kvasir, cpu]"]},
            "m2snet": {"recipe": "m2snet_polyp", "set": ["preset=[kvasir, cpu]"]},
        },
    },
    "cardiac": {
        "data": SHARED / "acdc",
        "split": "test",
        "about": "ACDC training slices, the `cpu` presets (96 px, widths / 4, bf16-mixed with channels_last where the "
                 "CPU has native bf16), volume-wise evaluation of the test volumes in the recipes' `paper` mode. Two "
                 "more rows: `mgrad_unet_1pass`, MGRAD-UNet with one pass per batch (`no_feedback`: the best CPU "
                 "setting found), and `unet_432steps`, the U-Net stopped at MGRAD-UNet's step count (seed 0), the "
                 "reference for the architecture at equal steps rather than equal time.",
        "columns": [("average.dice", "Dice (vol)"), ("average.hd95", "HD95 (vol)"), ("average.iou", "IoU (vol)")],
        "runs": {
            "unet": {"recipe": "mgrad_unet_acdc", "set": UNET_ACDC},
            "mgrad_unet": {"recipe": "mgrad_unet_acdc", "set": ["preset=cpu"]},
            "snet": {"recipe": "snet_acdc", "set": ["preset=cpu"]},
            # the best CPU setting found for MGRAD-UNet: one pass per batch (its 3-pass feedback loop triples a step)
            "mgrad_unet_1pass": {"recipe": "mgrad_unet_acdc", "set": ["preset=[cpu, no_feedback]"]},
            # evidence for the step cost: the U-Net stopped at MGRAD-UNet's step count (seed 0: 432 batches)
            "unet_432steps": {"recipe": "mgrad_unet_acdc", "set": UNET_ACDC + ["trainer.max_steps=432"]},
        },
        # (reference, model) pairs compared besides each model against the U-Net
        "pairs": [("unet_432steps", "mgrad_unet")],
    },
    "lesion": {
        "data": SHARED / "covid19-ct-semiseg",
        "split": "test",
        "about": "covid19-ct-semiseg, 3 classes (ground glass, consolidation), the `cpu` presets (128 px, bf16-mixed "
                 "with channels_last where the CPU has native bf16), per-image evaluation in strict mode, best.ckpt on "
                 "the 10 % validation carve-out. `mda_unet_fp32`: MDA-U-Net trained in fp32 (bf16 moved its "
                 "inference masks most, `bf16_agreement.md`). `unet_1493steps`: the U-Net stopped at MDA-U-Net's "
                 "step count (seed 0), the reference for the architecture at equal steps rather than equal time.",
        "columns": [("average.dice", "Dice"), ("average.iou", "IoU"), ("average.hd95", "HD95")],
        "runs": {
            "unet": {"recipe": "mda_unet_kits", "set": UNET_COVID},
            "mda_unet": {"recipe": "mda_unet_kits", "set": COVID + ["preset=cpu"]},
            # bf16 moved a trained MDA-U-Net's masks more than any other model's (bf16_agreement.md): train in fp32
            "mda_unet_fp32": {"recipe": "mda_unet_kits", "set": COVID + ["preset=cpu", "trainer.precision=32-true"]},
            # evidence for the step cost: the U-Net stopped at MDA-U-Net's step count (seed 0: 1493 batches)
            "unet_1493steps": {"recipe": "mda_unet_kits", "set": UNET_COVID + ["trainer.max_steps=1493"]},
        },
        "pairs": [("unet_1493steps", "mda_unet")],
    },
}
BASELINE = "unet"


def _get(d: dict[str, Any], dotted: str) -> float | None:
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d.get("mean") if isinstance(d, dict) else d


def _medseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medseg", *args], check=True)


def _eval_dir(out: Path, split: str) -> Path | None:
    found = sorted(d for d in (out / "eval").glob(f"{split}-*") if (d / "summary.json").is_file())
    return found[0] if found else None


def run_one(family: str, name: str, seed: int, budget: float, workdir: Path) -> dict[str, Any]:
    """Train (unless finished) and evaluate (unless evaluated) one run; its row of the table."""
    fam = FAMILIES[family]
    spec = fam["runs"][name]
    out = workdir / family / f"{name}-s{seed}"
    summary_path = out / "summary.json"
    from medseg.experiments.reproduce import FINISHED  # statuses of a run that needs no more training

    done = summary_path.is_file() and json.loads(summary_path.read_text()).get("status") in FINISHED
    wall = None
    if not done:
        cmd = ["train", "--recipe", spec["recipe"], "--data", str(fam["data"])]
        cmd += ["--resume", str(out)] if (out / "checkpoints" / "last.ckpt").is_file() else ["--out", str(out)]
        sets = spec["set"] + [f"seed={seed}", f"trainer.max_time_s={budget}", "trainer.max_epochs=-1",
                              "trainer.progress=false"]
        if "--resume" not in cmd:
            for s in sets:
                cmd += ["--set", s]
        t0 = time.perf_counter()
        _medseg(*cmd)
        wall = time.perf_counter() - t0
    if _eval_dir(out, fam["split"]) is None:
        _medseg("evaluate", str(out), "--split", fam["split"])
    summary = json.loads(summary_path.read_text())
    ev = json.loads((_eval_dir(out, fam["split"]) / "summary.json").read_text())
    row = {"family": family, "model": name, "seed": seed, "run": str(out), "recipe": spec["recipe"],
           "overrides": spec["set"], "budget_s": budget, "params": summary.get("params"),
           "steps": summary.get("steps"), "epochs": summary.get("epochs"),
           "train_seconds": summary.get("train_seconds"), "status": summary.get("status"),
           "eval_mode": ev.get("mode"), "protocol": ev.get("protocol")}
    if wall is not None:
        row["wall_s"] = round(wall, 1)
    for key, label in fam["columns"]:
        row[label] = _get(ev, key)
    return row


def compare_rows(family: str, seeds: int, workdir: Path) -> list[dict[str, Any]]:
    """Each paper model against the family's U-Net: per-case paired Dice over the seeds."""
    from medseg.experiments.compare import compare, write

    fam = FAMILIES[family]
    runs = lambda n: [workdir / family / f"{n}-s{s}" for s in range(seeds)]  # noqa: E731
    out = []
    pairs = [(BASELINE, name) for name in fam["runs"] if name != BASELINE] + fam.get("pairs", [])
    for ref, name in pairs:
        if not all(_eval_dir(p, fam["split"]) for p in runs(name) + runs(ref)):
            continue
        res = compare([runs(ref), runs(name)], metric="dice", split=fam["split"])
        write(res, workdir / family / (f"compare-{name}" if ref == BASELINE else f"compare-{name}-vs-{ref}"))
        mean_row = next(r for r in res["rows"] if r["class"] == "mean" and "mean_diff" in r)
        out.append({"family": family, "model": name, "vs": ref, "metric": "dice",
                    "mean_diff": mean_row["mean_diff"], "ci": mean_row["ci"], "p": mean_row["p"],
                    "win": mean_row["win"], "tie": mean_row["tie"], "loss": mean_row["loss"], "n": mean_row["n"]})
    return out


def _ms_per_step(r: dict[str, Any]) -> str:
    """Training wall time per optimiser step (batch), start-up and caching included."""
    return f"{1000 * r['train_seconds'] / r['steps']:.0f}" if r.get("train_seconds") and r.get("steps") else "–"


def _fmt(v: Any, pct: bool) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _loss_curve(run: Path) -> tuple[list[float], list[float]]:
    """Cumulative training seconds at each epoch's end and that epoch's training loss (summary.json history)."""
    rows = json.loads((run / "summary.json").read_text()).get("history", [])
    t, xs, ys = 0.0, [], []
    for r in rows:
        t += r.get("train/epoch_s", 0.0)
        if "train/loss_epoch" in r:
            xs.append(t)
            ys.append(r["train/loss_epoch"])
    return xs, ys


def write_curves(family: str, seeds: int, workdir: Path) -> Path | None:
    """``equal_budget_<family>.png``: each run's training loss against wall time, relative to its first epoch
    (the models' losses differ in kind: structure loss, Dice + CE), seeds as line styles."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    drawn = False
    for i, name in enumerate(FAMILIES[family]["runs"]):
        for seed in range(seeds):
            run = workdir / family / f"{name}-s{seed}"
            if not (run / "summary.json").is_file():
                continue
            xs, ys = _loss_curve(run)
            if ys:
                ax.plot(xs, [y / ys[0] for y in ys], "-o" if seed == 0 else "--s", ms=3, color=f"C{i}",
                        label=f"{name} seed {seed}")
                drawn = True
    if not drawn:
        return None
    ax.set(title=f"{family}: training loss / first epoch's loss", xlabel="training wall time (s)",
           ylabel="relative loss")
    ax.legend(fontsize=8)
    path = RESULTS / f"equal_budget_{family}.png"
    fig.savefig(path, bbox_inches="tight")
    return path


def write_results(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], budget: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "equal_budget.json"
    old = json.loads(jpath.read_text()) if jpath.is_file() else {"runs": {}, "compare": {}}
    for r in rows:
        old["runs"][f"{r['family']}/{r['model']}-s{r['seed']}"] = r
    for c in comparisons:
        vs = "" if c["vs"] == BASELINE else f"-vs-{c['vs']}"
        old["compare"][f"{c['family']}/{c['model']}{vs}"] = c
    jpath.write_text(json.dumps(old, indent=2))
    lines = ["# Equal wall-time budget: paper models vs U-Net, from scratch on this CPU", "",
             f"Machine: {machine_description()}", "",
             "Generated by `python benchmarks/equal_budget.py FAMILY...`: every run trains for the same wall time "
             "(`trainer.max_time_s`), one after the other, from scratch (recipe presets `cpu`), and is evaluated on the "
             "test split with the recipe's protocol. Per-run rows, then the mean over seeds, then the paired comparison "
             "of each paper model with the family's U-Net (`medseg compare`, per-case Dice averaged over seeds).", ""]
    by_family: dict[str, list[dict[str, Any]]] = {}
    for r in old["runs"].values():
        by_family.setdefault(r["family"], []).append(r)
    for family, frs in by_family.items():
        cols = [label for _, label in FAMILIES[family]["columns"]]
        pct = {c: c not in ("MAE",) and not c.startswith("HD95") for c in cols}
        lines += [f"## {family} (`{FAMILIES[family]['data'].name}`, split `{FAMILIES[family]['split']}`)", "",
                  FAMILIES[family].get("about", ""), "",
                  "| run | recipe / preset | params | budget | steps | ms/step | " + " | ".join(cols) + " |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(cols)]
        for r in sorted(frs, key=lambda r: (list(FAMILIES[family]["runs"]).index(r["model"]), r["seed"])):
            preset = " ".join(s for s in r["overrides"] if s.startswith(("preset=", "model.name=", "trainer.precision=")))
            steps_cap = next((s.split("=")[1] for s in r["overrides"] if s.startswith("trainer.max_steps=")), None)
            budget = f"{steps_cap} steps" if steps_cap else f"{r['budget_s']:.0f} s"
            lines.append(f"| {r['model']} seed {r['seed']} | `{r['recipe']}` {preset} | {r['params'] / 1e6:.1f} M | "
                         f"{budget} | {r['steps']} | {_ms_per_step(r)} | "
                         + " | ".join(_fmt(r.get(c), pct[c]) for c in cols) + " |")
        lines += ["", "Mean over seeds:", "", "| model | seeds | " + " | ".join(cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        for model in FAMILIES[family]["runs"]:
            mr = [r for r in frs if r["model"] == model]
            if not mr:
                continue
            cells = []
            for c in cols:
                vals = [r[c] for r in mr if r.get(c) is not None]
                cells.append(_fmt(statistics.fmean(vals), pct[c]) if vals else "–")
            lines.append(f"| {model} | {len(mr)} | " + " | ".join(cells) + " |")
        if (RESULTS / f"equal_budget_{family}.png").is_file():
            lines += ["", f"Training loss against wall time: `equal_budget_{family}.png`."]
        comps = [c for c in old["compare"].values() if c["family"] == family]
        if comps:
            why = ("; the per-case Dice of `cases.csv`: probabilities thresholded at 0.5 without the polyp "
                   "protocol's min-max rescaling, so its mean can differ from the mDice column") if family == "polyp" else ""
            lines += ["", f"Paired per-case Dice (Δ = model − reference, in points{why}):", "",
                      "| model | reference | Δ Dice | 95 % CI | Wilcoxon p | W/T/L | cases |",
                      "|---|---|---:|---|---:|---|---:|"]
            for c in comps:
                lines.append(f"| {c['model']} | {c['vs']} | {100 * c['mean_diff']:+.1f} | [{100 * c['ci'][0]:+.1f}, "
                             f"{100 * c['ci'][1]:+.1f}] | {c['p']:.3g} | {c['win']}/{c['tie']}/{c['loss']} | {c['n']} |")
        lines.append("")
    (RESULTS / "equal_budget.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--budget", type=float, default=600.0, help="training wall time per run, seconds")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated models of the family (the U-Net is always kept)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medseg-equal-budget"))
    args = ap.parse_args()
    if args.list or not args.families:
        for f, spec in FAMILIES.items():
            for m, r in spec["runs"].items():
                print(f"{f:8s} {m:11s} {r['recipe']:16s} {' '.join(r['set'][-1:])}")
        return
    for family in args.families:
        if family not in FAMILIES:
            raise SystemExit(f"unknown family {family!r}; --list shows them")
        if not FAMILIES[family]["data"].is_dir():
            raise SystemExit(f"{FAMILIES[family]['data']} not found: this benchmark needs ../shared/data")
    only = {m for m in args.only.split(",") if m} | {BASELINE}
    for family in args.families:
        rows = []
        for seed in range(args.seeds):
            for model in FAMILIES[family]["runs"]:
                if args.only and model not in only:
                    continue
                rows.append(run_one(family, model, seed, args.budget, args.workdir))
                write_results(rows, [], args.budget)
        write_results(rows, compare_rows(family, args.seeds, args.workdir), args.budget)
        write_curves(family, args.seeds, args.workdir)


if __name__ == "__main__":
    main()
