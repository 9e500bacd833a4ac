"""bf16 inference on the CPU against fp32, per paper model at its paper size (run by hand).

    python benchmarks/bf16.py [--repeats 5] [--run RUN_DIR --data DATA_DIR]

For each model, in one run and back to back: a 2048^2 bf16 matrix product (the bf16 peak), the fp32 fast
path and the bf16 fast path (autocast, as ``--precision bf16``) at batch 1, interleaved repeat by repeat;
latency ratio bf16/fp32, achieved GFLOP/s as % of the bf16 matmul rate, and the fp32-vs-bf16 mask
agreement on random inputs (random weights with calibrated BatchNorm statistics). With ``--run``, also
the agreement of ``medseg.Predictor`` fp32 vs bf16 on that trained run's test split.
Writes benchmarks/results/bf16.md and .json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_MODELS = ["msnet", "m2snet", "mgrad_unet", "snet", "mda_unet"]


def _masks(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(1)


def bench_model(name: str, repeats: int) -> dict[str, Any]:
    from medseg.engine.fast import calibrate_batchnorm, inference_autocast, optimize_for_inference
    from medseg.models import build_model, get_entry
    from medseg.stats import count_macs, matmul_gflops, paper_figures

    entry = get_entry(name)
    h, w = entry.default_size
    paper = paper_figures(name)
    cin, cout = paper.get("in_channels", 3), paper.get("out_channels", 1)
    torch.manual_seed(0)
    model = build_model(name, in_channels=cin, out_channels=cout).eval()
    x = torch.randn(1, cin, h, w)
    calibrate_batchnorm(model, x)
    optimize_for_inference(model, example_input=x)
    macs = count_macs(model, x)

    def fwd(precision: str) -> torch.Tensor:
        with torch.inference_mode(), inference_autocast(precision):
            return model(x).logits

    mm_bf16 = matmul_gflops(2048, dtype=torch.bfloat16)
    mm_fp32 = matmul_gflops(2048)
    out = {p: fwd(p).float() for p in ("fp32", "bf16")}  # also the warm-up
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for p in ("fp32", "bf16"):
            t0 = time.perf_counter()
            fwd(p)
            times[p].append(time.perf_counter() - t0)
    lat = {p: statistics.median(v) for p, v in times.items()}
    agreement = []
    for seed in range(3):  # more random inputs for the agreement
        g = torch.Generator().manual_seed(100 + seed)
        xi = torch.randn(x.shape, generator=g)
        with torch.inference_mode():
            a = model(xi).logits.float()
            with inference_autocast("bf16"):
                b = model(xi).logits.float()
        agreement.append(float((_masks(a) == _masks(b)).float().mean()))
    agreement.append(float((_masks(out["fp32"]) == _masks(out["bf16"])).float().mean()))
    row = {"model": name, "size": [h, w], "in_channels": cin, "out_channels": cout, "gmacs": macs / 1e9,
           "latency_fp32_ms": lat["fp32"] * 1e3, "latency_bf16_ms": lat["bf16"] * 1e3,
           "ratio_bf16_fp32": lat["bf16"] / lat["fp32"], "matmul_gflops_bf16": mm_bf16, "matmul_gflops_fp32": mm_fp32,
           "gflops_bf16": 2 * macs / lat["bf16"] / 1e9, "gflops_fp32": 2 * macs / lat["fp32"] / 1e9,
           "max_abs_dlogits": float((out["fp32"] - out["bf16"]).abs().max()),
           "agreement_random_min": min(agreement), "agreement_random_mean": float(np.mean(agreement))}
    row["pct_bf16_matmul"] = 100 * row["gflops_bf16"] / mm_bf16
    row["pct_fp32_matmul_fp32"] = 100 * row["gflops_fp32"] / mm_fp32
    print(row, flush=True)
    return row


def run_agreement(run: Path, data: Path) -> dict[str, Any]:
    from medseg.data.readers import build_reader
    from medseg.engine.predict import Predictor
    from medseg.metrics.overlap import dice

    p32, p16 = Predictor.from_run(run), Predictor.from_run(run, precision="bf16")
    reader = build_reader(p32.cfg.data.model_copy(update={"root": str(data)}))
    same = total = 0
    d32, d16 = [], []
    for cid in reader.ids(p32.cfg.data.test_split):
        case = reader.load(cid)
        a, _ = p32.predict_case(case)
        b, _ = p16.predict_case(case)
        same += int((a == b).sum())
        total += a.size
        gt = np.asarray(case.label)
        for c in range(1, p32.num_classes):
            d32.append(dice(a == c, gt == c))
            d16.append(dice(b == c, gt == c))
    return {"run": str(run), "model": p32.cfg.model.name, "pixels": total, "agreement": same / total,
            "mean_dice_fp32": float(np.nanmean(d32)), "mean_dice_bf16": float(np.nanmean(d16))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(PAPER_MODELS))
    ap.add_argument("--run", type=Path, default=None, help="a trained run folder for the agreement on real predictions")
    ap.add_argument("--data", type=Path, default=None, help="its data folder")
    args = ap.parse_args()
    from medseg.engine.fast import cpu_bf16_flags

    torch.set_grad_enabled(False)
    rows = [bench_model(n, args.repeats) for n in args.models.split(",")]
    trained = run_agreement(args.run, args.data) if args.run else None
    lines = ["# bf16 inference on the CPU (fast path, batch 1, paper size)", "",
             f"Machine: {machine_description()}; native bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}", "",
             f"Generated by `python {' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')}. Random weights with calibrated",
             "BatchNorm statistics, Conv+BN folded, channels_last; bf16 = `torch.autocast('cpu', bfloat16)` "
             "(`--precision bf16`), logits cast to fp32. fp32 and bf16 timed alternately, median of "
             f"{args.repeats}; a 2048^2 bf16 (and fp32) matrix product timed right before each model.", "",
             "| model | size | GMACs | fp32 (ms) | bf16 (ms) | bf16/fp32 | bf16 GFLOP/s | % of bf16 matmul | bf16 matmul GFLOP/s "
             "| fp32 % of fp32 matmul | max abs Δlogits | mask agreement (random inputs, min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['gmacs']:.2f} | {r['latency_fp32_ms']:.0f} | "
                     f"{r['latency_bf16_ms']:.0f} | {r['ratio_bf16_fp32']:.2f} | {r['gflops_bf16']:.0f} | "
                     f"{r['pct_bf16_matmul']:.0f} | {r['matmul_gflops_bf16']:.0f} | {r['pct_fp32_matmul_fp32']:.0f} | "
                     f"{r['max_abs_dlogits']:.3g} | {100 * r['agreement_random_min']:.2f} % |")
    lines += ["", "Random weights give many near-tie pixels (logits near 0), so the random-input agreement is a lower bound."]
    if trained:
        lines += ["", f"Trained run ({trained['model']}, `{trained['run']}`, its test split, {trained['pixels']} pixels): "
                  f"masks agree on {100 * trained['agreement']:.3f} %; mean foreground Dice fp32 {trained['mean_dice_fp32']:.4f}, "
                  f"bf16 {trained['mean_dice_bf16']:.4f} (Δ {trained['mean_dice_bf16'] - trained['mean_dice_fp32']:+.4f})."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bf16.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "bf16.json").write_text(json.dumps({"models": rows, "trained_run": trained}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
