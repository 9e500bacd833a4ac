"""Quickstart benchmark: `medseg train` with no arguments, then Dice on unseen built-in cases.

Measures the wall time of the default run (goal: <= 3 minutes on a 2-core CPU) and the mean
foreground Dice of its model on phantom-ct cases generated with another seed (goal: >= 0.85),
and writes both to benchmarks/results/quickstart.md.

    python benchmarks/quickstart.py [--seed 1] [--count 120] [--workdir /tmp/medseg-quickstart]
    python benchmarks/quickstart.py --set trainer.precision=bf16-mixed --results quickstart_bf16.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quickstart.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=1, help="seed of the unseen evaluation data (training uses 0)")
    ap.add_argument("--count", type=int, default=120, help="number of unseen 2D cases")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medseg-quickstart"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a training override (repeatable)")
    ap.add_argument("--results", default=RESULTS.name, help="file name under benchmarks/results/")
    args = ap.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    medseg = [sys.executable, "-m", "medseg.cli"]

    t0 = time.perf_counter()
    sets = [a for kv in args.sets for a in ("--set", kv)]
    subprocess.run(medseg + ["train", "--out", str(work / "run"), *sets], cwd=work, check=True)
    train_wall = time.perf_counter() - t0

    unseen = work / f"unseen-seed{args.seed}"
    subprocess.run(medseg + ["data", "builtin", "phantom-ct", "--out", str(unseen), "--seed", str(args.seed),
                             "--count", str(args.count)], check=True)
    ids = sorted(p.stem for p in (unseen / "images").glob("*.png"))
    (unseen / "splits" / "all.txt").write_text("\n".join(ids) + "\n")
    rows = {}
    for mode in ("strict", "paper"):
        subprocess.run(medseg + ["evaluate", str(work / "run"), "--data", str(unseen), "--split", "all", "--mode", mode],
                       check=True, stdout=subprocess.DEVNULL)
        rows[mode] = json.loads((work / "run" / "eval" / f"all-image-{mode}" / "summary.json").read_text())
    summary = json.loads((work / "run" / "summary.json").read_text())

    strict = rows["strict"]
    lines = [
        "# Quickstart benchmark",
        "",
        f"Machine: {machine_description()}",
        "",
        "`medseg train` (no arguments: recipe `quickstart`, built-in phantom-ct seed 0"
        + (f"; overrides {', '.join(f'`{kv}`' for kv in args.sets)}" if args.sets else "") + "), then `medseg evaluate`",
        f"on {len(ids)} unseen phantom-ct slices generated with seed {args.seed} (per-image metrics, mean over images).",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| `medseg train` wall time (incl. data generation and start-up) | {train_wall:.0f} s | <= 180 s |",
        f"| training time (Lightning fit) | {summary['train_seconds']:.0f} s, {summary['epochs']} epochs, {summary['steps']} steps | |",
        f"| model | {summary['model']}, {summary['params']:,} parameters | |",
        f"| best validation Dice (seed-0 val split) | {summary['best_val']:.4f} | |",
        f"| mean foreground Dice, unseen cases, strict mode (both empty = 1) | {dice_of(strict):.4f} | >= 0.85 |",
        f"| mean foreground Dice, unseen cases, paper mode (empty prediction = 0) | {dice_of(rows['paper']):.4f} | |",
        "",
        "Per class (strict mode, unseen cases):",
        "",
        (work / "run" / "eval" / "all-image-strict" / "table.md").read_text(),
    ]
    out = RESULTS.parent / args.results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def dice_of(summary: dict) -> float:
    """The overall ("Average") foreground Dice of a MetricTable summary."""
    return float(summary["average"]["dice"]["mean"])


if __name__ == "__main__":
    main()
