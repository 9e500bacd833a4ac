"""Scaled-down training + evaluation runs of every recipe on the real data in ../shared/data (CPU).

Each run trains through the `medseg` CLI with the recipe and the overrides listed below, evaluates
with `medseg evaluate` on the test split, and (for image data) predicts a few images at their own
size. Wall times and the evaluation tables go to benchmarks/results/cpu_runs.md (appended per run,
newest last) and the raw summaries to benchmarks/results/cpu_runs.json.

    python benchmarks/cpu_runs.py --list
    python benchmarks/cpu_runs.py unet_kvasir m2snet_kvasir mgrad_acdc snet_acdc unet_acdc mda_covid
    python benchmarks/cpu_runs.py snet_acdc_time unet_acdc_time   # equal CPU time with mgrad_acdc

The overrides shrink what a 2-core CPU cannot do in minutes (image size, number of training cases,
epochs, and for the ACDC comparison the channel widths); each run says what it changed.
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

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"

ACDC_SMALL = [
    "data.size=[96,96]",
    "data.max_train_cases=240",
    "data.max_val_cases=4",
    "data.batch_size=12",
    "trainer.max_epochs=3",
    "trainer.progress=false",
    # AdamW constant as the MGRAD author's code (preset `code`, there 1e-4) at 1e-3: SGD 0.01 + poly needs far more steps
    "optim={name: adamw, lr: 0.001, weight_decay: 0.0001}",
    "schedule={name: constant}",
]

RUNS: dict[str, dict] = {
    "unet_kvasir": {
        "recipe": "unet_kvasir",
        "data": SHARED / "kvasir-seg",
        "split": "pranet_test",
        "set": ["data.size=[128,128]", "model.kwargs={features: [32, 32, 64, 128, 256, 32]}", "data.batch_size=16",
                "trainer.max_epochs=8", "trainer.progress=false", "optim.lr=0.001", "data.max_val_cases=40"],
        "note": "128x128, MONAI BasicUNet widths 32-256 (2.0 M params), 8 epochs, AdamW 1e-3",
        "predict": True,
    },
    "m2snet_kvasir": {
        "recipe": "m2snet_polyp",
        "data": SHARED / "kvasir-seg",
        "split": "pranet_test",
        "set": ["preset=[kvasir, cpu]", "data.size=[128,128]", "data.multiscale=[96,128]", "data.max_train_cases=400",
                "trainer.max_epochs=4", "trainer.progress=false"],
        "note": "preset cpu (no pretrained weights, no LossNet), 128 px, multi-scale {96,128}, 400 training images, 4 epochs",
        "predict": True,
    },
    "mgrad_acdc": {
        "recipe": "mgrad_unet_acdc",
        "data": SHARED / "acdc",
        "split": "test",
        "set": ACDC_SMALL + ["model.kwargs={encoder_channels: [16, 32, 64, 128, 256], width: 16}"],
        "note": "96 px, 240 training slices, 3 epochs, AdamW 1e-3 constant, widths /4 (encoder 16-256, decoders 16), feedback x3 per batch, aggregated loss",
    },
    "snet_acdc": {
        "recipe": "snet_acdc",
        "data": SHARED / "acdc",
        "split": "test",
        "set": ACDC_SMALL + ["model.kwargs={cnn_channels: [16, 32, 64, 128, 256], vit_dims: [16, 32, 64, 128], vit_strides: [4, 8, 16, 32]}"],
        "note": "96 px, 240 training slices, 3 epochs, AdamW 1e-3 constant, widths /4 (CNN 16-256, ViT 16-128 at the legacy strides 4/8/16/32)",
    },
    "unet_acdc": {
        "recipe": "mgrad_unet_acdc",
        "data": SHARED / "acdc",
        "split": "test",
        "set": ACDC_SMALL + ["model.name=unet", "model.kwargs={features: [16, 32, 64, 128, 256, 16]}",
                             "strategy.name=single",
                             "loss.terms=[{loss: dice_ce, output: logits, kwargs: {ce_weight: 0.3, dice_weight: 0.7}}]"],
        "note": "the same budget with a U-Net (widths 16-256), single pass, 0.3 CE + 0.7 Dice",
    },
    # Equal CPU time instead of equal epochs: MGRAD-UNet's 3 feedback passes make its 3 epochs ~12x dearer
    "snet_acdc_time": {
        "recipe": "snet_acdc",
        "data": SHARED / "acdc",
        "split": "test",
        "set": ACDC_SMALL + ["model.kwargs={cnn_channels: [16, 32, 64, 128, 256], vit_dims: [16, 32, 64, 128], vit_strides: [4, 8, 16, 32]}",
                             "trainer.max_epochs=60", "trainer.max_time_s=330"],
        "note": "as snet_acdc, but trained for the CPU time mgrad_acdc took (330 s, up to 60 epochs)",
    },
    "unet_acdc_time": {
        "recipe": "mgrad_unet_acdc",
        "data": SHARED / "acdc",
        "split": "test",
        "set": ACDC_SMALL + ["model.name=unet", "model.kwargs={features: [16, 32, 64, 128, 256, 16]}",
                             "strategy.name=single",
                             "loss.terms=[{loss: dice_ce, output: logits, kwargs: {ce_weight: 0.3, dice_weight: 0.7}}]",
                             "trainer.max_epochs=60", "trainer.max_time_s=330"],
        "note": "as unet_acdc, but trained for the CPU time mgrad_acdc took (330 s, up to 60 epochs)",
    },
    "mda_covid": {
        "recipe": "mda_unet_kits",
        "data": SHARED / "covid19-ct-semiseg",
        "split": "test",
        "set": ["data.format=image_folder", "data.mask_dir=masks_multiclass", "data.num_classes=3",
                "data.class_names=[background, ground_glass, consolidation]", "data.normalize={kind: unit}",
                "data.size=[128,128]", "data.batch_size=4", "trainer.accumulate_grad_batches=1",
                "data.augment={preset: basic, flip: true, rotate_deg: 10}",
                "model.kwargs={channels: [16, 32, 64, 128, 256]}", "trainer.max_epochs=30", "optim.lr=0.001",
                "data.val_fraction=0.1", "trainer.progress=false", "eval.protocol=image",
                "eval.label_groups=[{name: infection, labels: [1, 2]}]"],
        "note": "COVID-19 CT 3-class (50 train / 48 test slices), 128 px, widths /4 (16-256), 30 epochs, Adam 1e-3; per-image metrics, plus the union ground glass ∪ consolidation (`infection`)",
        "predict": True,
    },
}


def run(name: str, workdir: Path) -> dict:
    spec = RUNS[name]
    if not Path(spec["data"]).is_dir():
        raise SystemExit(f"{spec['data']} not found: these runs need ../shared/data")
    out = workdir / name
    shutil.rmtree(out, ignore_errors=True)
    medseg = [sys.executable, "-m", "medseg.cli"]
    cmd = medseg + ["train", "--recipe", spec["recipe"], "--data", str(spec["data"]), "--out", str(out)]
    for s in spec["set"]:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(medseg + ["evaluate", str(out), "--split", spec["split"], "--checkpoint", "best"], check=True)
    eval_s = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    ev_dir = next((out / "eval").glob(f"{spec['split']}-*"))  # <split>-<protocol>-<mode>[-tta][-pooled]
    ev = json.loads((ev_dir / "summary.json").read_text())
    table = (ev_dir / "table.md").read_text()
    polyp = ev_dir / "polyp.md"
    pred = ""
    if spec.get("predict"):
        imgs = sorted((Path(spec["data"]) / "images").iterdir())[:5]
        src = workdir / f"{name}-predict-in"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        for p in imgs:
            shutil.copy(p, src / p.name)
        subprocess.run(medseg + ["predict", str(out), "--input", str(src), "--output", str(workdir / f"{name}-pred")], check=True)
        from PIL import Image

        sizes = [(Image.open(p).size, Image.open(workdir / f"{name}-pred" / (p.stem + ".png")).size) for p in imgs]
        pred = "predict: " + ", ".join(f"{a[0]}x{a[1]} -> {b[0]}x{b[1]}" for a, b in sizes)
    return {
        "name": name,
        "note": spec["note"],
        "recipe": spec["recipe"],
        "overrides": spec["set"],
        "train_wall_s": round(train_s, 1),
        "eval_wall_s": round(eval_s, 1),
        "train": {k: summary[k] for k in ("model", "params", "epochs", "steps", "train_seconds", "best_val")},
        "eval": {k: ev[k] for k in ("split", "protocol", "cases", "seconds", "average")},
        "polyp": ev.get("polyp"),
        "table": table,
        "polyp_table": polyp.read_text() if polyp.is_file() else "",
        "predict": pred,
    }


def write(results: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "cpu_runs.json"
    old = json.loads(jpath.read_text()) if jpath.is_file() else {}
    for r in results:
        old[r["name"]] = r
    jpath.write_text(json.dumps(old, indent=2, default=float))
    lines = ["# Scaled-down CPU runs on ../shared/data", "", f"Machine: {machine_description()}", "",
             "Generated by `python benchmarks/cpu_runs.py NAME...`; evaluation in `paper` mode on the test split.", ""]
    for r in old.values():
        t = r["train"]
        lines += [
            f"## {r['name']} (recipe `{r['recipe']}`)",
            "",
            f"{r['note']}.",
            "",
            f"- model `{t['model']}`, {t['params']:,} parameters; {t['epochs']} epochs, {t['steps']} steps",
            f"- training {t['train_seconds']:.0f} s (command wall {r['train_wall_s']:.0f} s); evaluation of "
            f"{r['eval']['cases']} {r['eval']['protocol']} cases {r['eval']['seconds']:.1f} s",
            f"- best validation Dice {t['best_val']:.4f}" if t.get("best_val") is not None else "- no validation split (last epoch)",
            f"- {r['predict']}" if r.get("predict") else "",
            "",
            "" if r["polyp_table"].strip() in r["table"] else r["polyp_table"],  # table.md already holds it
            r["table"],
            "",
        ]
    (RESULTS / "cpu_runs.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medseg-cpu-runs"))
    args = ap.parse_args()
    if args.list or not args.runs:
        for k, v in RUNS.items():
            print(f"{k:16s} {v['recipe']:18s} {v['note']}")
        return
    for name in args.runs:
        if name not in RUNS:
            raise SystemExit(f"unknown run {name!r}; --list shows them")
    for name in args.runs:
        write([run(name, args.workdir)])


if __name__ == "__main__":
    main()
