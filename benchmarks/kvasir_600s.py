"""Kvasir-SEG in 600 s of CPU training, from scratch: the best setting against the 30-line anchor loop (issue 19).

The anchor (issue 19): segmentation_models_pytorch ``Unet("resnet34", encoder_weights=None)`` in a plain
loop over preloaded 128x128 tensors, flips, AdamW 1e-3, BCE + Dice, batch 16: 454 steps in 600 s and
Dice@0.5 0.636 on the 100 PraNet test images at each image's own size. Each setting below trains through
the ``medseg`` CLI on ``../shared/data/kvasir-seg`` for 600 s of wall time, one after the other, and is
evaluated with ``medseg evaluate --split pranet_test`` (polyp protocol, strict mode).

    python benchmarks/kvasir_600s.py --list
    python benchmarks/kvasir_600s.py resunet resunet_cos      # finished runs in --workdir are not re-run

Results: ``benchmarks/results/kvasir_600s.md`` and ``.json`` (rows of settings not re-run are kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "kvasir-seg"
RESULTS = Path(__file__).resolve().parent / "results"
TIMED = ["trainer.max_time_s=600", "trainer.max_epochs=-1"]
FP32 = ["trainer.precision=32-true", "trainer.channels_last=false"]  # the CPU presets' default before bf16

SETTINGS: dict[str, dict[str, Any]] = {
    "resunet": {"recipe": "resunet_kvasir", "set": [*TIMED, "schedule={name: constant}", *FP32],
                "note": "timm_unet ResNet-34 (smp-style), 128 px, batch 16, AdamW 1e-3 constant, flips, all 900 images"},
    "resunet_cos": {"recipe": "resunet_kvasir", "set": ["trainer.max_epochs=8", "trainer.precision=32-true",
                                                        "trainer.channels_last=false"],
                    "note": "fp32: as resunet, 8 epochs with 1 warm-up epoch and a cosine decay to 0 "
                            "(600 s guard)"},
    "resunet_cos_tta": {"recipe": "resunet_kvasir", "run": "resunet_cos", "eval": ["--set", "eval.tta=true"],
                        "set": ["trainer.max_epochs=8", "trainer.precision=32-true", "trainer.channels_last=false"],
                        "note": "the resunet_cos run evaluated with flip test-time augmentation (eval.tta)"},
    "resunet_bf16": {"recipe": "resunet_kvasir", "set": ["trainer.precision=bf16-mixed", "trainer.max_epochs=16",
                                                         "trainer.channels_last=false"],
                     "note": "bf16-mixed (autocast; 1.9x the fp32 step on this CPU), 16 epochs with 1 warm-up epoch and a "
                             "cosine decay (the 600 s guard cut the 16th epoch after 9 of its 56 steps)"},
    "resunet_bf16_cl": {"recipe": "resunet_kvasir", "set": [],
                        "note": "the recipe's default: bf16-mixed and channels_last (2.15x the fp32 step), 15 epochs with "
                                "1 warm-up epoch and a cosine decay (600 s guard)"},
    "m2snet_adamw": {"recipe": "m2snet_polyp", "set": ["preset=[kvasir, cpu]", *TIMED, *FP32],
                     "note": "M2SNet, preset cpu: random Res2Net-50, AdamW 1e-3 constant, 128 px multi-scale {96,128}, batch 8"},
    "unet": {"recipe": "unet_kvasir", "set": ["preset=cpu", *TIMED, *FP32],
             "note": "U-Net 32-256 (2.0 M), 128 px, batch 16, AdamW 1e-3 constant, 10 % validation carve-out"},
}
COLUMNS = [("dice", "mDice@0.5"), ("iou", "mIoU@0.5"), ("Sm", "Sα"), ("MAE", "MAE")]


def _medseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "medseg", *args], check=True)


def run(name: str, workdir: Path) -> dict[str, Any]:
    spec = SETTINGS[name]
    out = workdir / spec.get("run", name)  # a setting may re-evaluate another setting's run
    if not (out / "summary.json").is_file():
        cmd = ["train", "--recipe", spec["recipe"], "--data", str(DATA), "--out", str(out), "--set", "trainer.progress=false"]
        for s in spec["set"]:
            cmd += ["--set", s]
        _medseg(*cmd)
    ev_dir = out / "eval" / ("pranet_test-polyp-strict" + ("-tta" if spec.get("eval") else ""))
    if not (ev_dir / "summary.json").is_file():
        _medseg("evaluate", str(out), "--split", "pranet_test", *spec.get("eval", []))
    summary = json.loads((out / "summary.json").read_text())
    ev = json.loads((ev_dir / "summary.json").read_text())
    row = {"name": name, "recipe": spec["recipe"], "overrides": spec["set"], "note": spec["note"],
           "params": summary["params"], "steps": summary["steps"], "epochs": summary.get("epochs"),
           "train_seconds": summary["train_seconds"], "status": summary.get("status")}
    row |= {label: ev["polyp"][key] for key, label in COLUMNS}
    row |= {k: ev["average"][k]["mean"] for k in ("recall", "specificity")}
    return row


def write(rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "kvasir_600s.json"
    old = json.loads(jpath.read_text()) if jpath.is_file() else {}
    old.update({r["name"]: r for r in rows})
    jpath.write_text(json.dumps(old, indent=2))
    lines = ["# Kvasir-SEG in 600 s of CPU training, from scratch", "", f"Machine: {machine_description()}", "",
             "Generated by `python benchmarks/kvasir_600s.py NAME...`: each setting trains for 600 s of wall time "
             "(`trainer.max_time_s`), one after the other, and is evaluated on the 100 PraNet test images at their "
             "own size (polyp protocol, strict mode). Anchor (issue 19): smp `Unet(\"resnet34\")` in a 30-line loop "
             "over preloaded 128x128 tensors, 454 steps, Dice@0.5 **0.636**.", "",
             "| setting | recipe + overrides | params | train s | steps | epochs | " + " | ".join(c for _, c in COLUMNS)
             + " | recall | specificity |", "|---|---|---:|---:|---:|---:|" + "---:|" * (len(COLUMNS) + 2)]
    for r in old.values():
        sets = " ".join(f"`{s}`" for s in r["overrides"])
        lines.append(f"| {r['name']} | `{r['recipe']}` {sets} | {r['params'] / 1e6:.1f} M | {r['train_seconds']:.0f} | {r['steps']} | {r['epochs']} | "
                     + " | ".join(f"{r[c]:.3f}" for _, c in COLUMNS)
                     + f" | {100 * r['recall']:.1f} % | {100 * r['specificity']:.1f} % |")
    lines += ["", "Settings (each row's overrides pin what it measured; the recipe's defaults have changed since the "
              "fp32 rows):", ""] + [f"- `{r['name']}`: {r['note']}" for r in old.values()]
    lines += ["", "The best Kvasir setting found in 600 s is not here but in `equal_budget.md`: the 2.0 M-parameter "
              "U-Net of `unet_kvasir --set preset=cpu data.val_split=null` (bf16-mixed + channels_last, 128 px, batch "
              "16, all 900 training images), mDice@0.5 0.754 and 0.756 with two seeds."]
    (RESULTS / "kvasir_600s.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medseg-kvasir-600s"))
    args = ap.parse_args()
    if args.list or not args.settings:
        for k, v in SETTINGS.items():
            print(f"{k:14s} {v['recipe']:16s} {v['note']}")
        return
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}; --list shows them")
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark needs ../shared/data")
    for name in args.settings:
        write([run(name, args.workdir)])


if __name__ == "__main__":
    main()
