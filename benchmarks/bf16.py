"""bf16 inference on the CPU against fp32, per paper model at its paper size (run by hand).

    python benchmarks/bf16.py [--repeats 5] [--run RUN_DIR --data DATA_DIR] [--official DIR] [--compile]
    python benchmarks/bf16.py --agreement RUN=DATA [--agreement RUN=DATA ...]

For each model, in one run and back to back: a 2048^2 bf16 matrix product (the bf16 peak), the fp32 fast
path and the bf16 fast path (autocast, as ``--precision bf16``) at batch 1, interleaved repeat by repeat;
latency ratio bf16/fp32, achieved GFLOP/s as % of the bf16 matmul rate, and the fp32-vs-bf16 mask
agreement on random inputs (random weights with calibrated BatchNorm statistics). With ``--run``, also
the agreement of ``medseg.Predictor`` fp32 vs bf16 on that trained run's test split. ``--official DIR`` (a
checkout of the authors' MSNet-M2SNet repository, outside this one, e.g. from ``fetch``) times their forward
in fp32 in the same interleaving; ``--compile`` adds bf16 under ``torch.compile`` with Inductor freezing.
Writes benchmarks/results/bf16.md and .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description, merged_rows, write_results  # noqa: E402

PAPER_MODELS = ["msnet", "m2snet", "mgrad_unet", "snet", "mda_unet"]


def _masks(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(1)


def official_model(name: str, repo: Path) -> torch.nn.Module | None:
    """The authors' MSNet / M2SNet (``model/miccai_msnet.py`` of Xiaoqi-Zhao-DLUT/MSNet-M2SNet, checked out in
    ``repo``, outside this repository), random weights, eval mode; None for other models."""
    if name not in ("msnet", "m2snet"):
        return None
    sys.path.insert(0, str(repo))
    import model.res2net as res2net  # the authors' package layout

    build = res2net.res2net50_v1b_26w_4s
    res2net.res2net50_v1b_26w_4s = lambda pretrained=False, **kw: build(pretrained=False, **kw)  # no download
    import model.miccai_msnet as official

    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # M2SNet's all-ones filters call .cuda() in __init__
    try:
        torch.manual_seed(0)
        return (official.MSNet() if name == "msnet" else official.M2SNet()).eval()
    finally:
        torch.Tensor.cuda = cuda


def bench_model(name: str, repeats: int, official_repo: Path | None = None, compile: bool = False) -> dict[str, Any]:
    from medseg.engine.fast import (
        calibrate_batchnorm,
        inference_autocast,
        keep_fp32_under_autocast,
        optimize_for_inference,
    )
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
    keep_fp32_under_autocast(model)  # as Predictor does for --precision bf16 (the compiled copy below too)
    compiled = None
    if compile:  # Inductor with freezing (constant-folds BN and pre-packs the bf16 weights), autocast bf16
        import copy

        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = copy.deepcopy(model)
        optimize_for_inference(compiled, fold_bn=False, compile=True)
    optimize_for_inference(model, example_input=x)
    macs = count_macs(model, x)
    official = official_model(name, official_repo) if official_repo else None

    def fwd(precision: str) -> torch.Tensor:
        with torch.inference_mode(), inference_autocast(precision):
            return model(x).logits

    def fwd_compiled() -> torch.Tensor:
        with torch.inference_mode(), inference_autocast("bf16"):
            return compiled(x).logits

    variants = {"fp32": lambda: fwd("fp32"), "bf16": lambda: fwd("bf16")}
    if official is not None:
        variants["official_fp32"] = lambda: official(x)
    compile_s = None
    if compiled is not None:
        t0 = time.perf_counter()
        fwd_compiled()
        compile_s = time.perf_counter() - t0
        variants["bf16_compiled"] = fwd_compiled
    mm_bf16 = matmul_gflops(2048, dtype=torch.bfloat16)
    mm_fp32 = matmul_gflops(2048)
    out = {p: fwd(p).float() for p in ("fp32", "bf16")}  # also the warm-up
    if official is not None:
        variants["official_fp32"]()  # its warm-up (the compiled forward warmed up while compiling)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    lat = {k: statistics.median(v) for k, v in times.items()}
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
    if "official_fp32" in lat:
        row["latency_official_fp32_ms"] = lat["official_fp32"] * 1e3
    if "bf16_compiled" in lat:
        row["latency_bf16_compiled_ms"] = lat["bf16_compiled"] * 1e3
        row["compile_s"] = compile_s
        row["pct_bf16_matmul_compiled"] = 100 * 2 * macs / lat["bf16_compiled"] / 1e9 / mm_bf16
    print(row, flush=True)
    return row


def write_agreements(rows: list[dict[str, Any]]) -> None:
    """``bf16_agreement.md``: the issue-17 guard (masks agree on >= 99.5 % of pixels, mean Dice within 0.002).

    Rows of earlier runs (by run folder) are kept, so runs measured on other days and data sets stay in the table."""
    rows = merged_rows("bf16_agreement", rows, "run")
    lines = ["# bf16 inference on trained models: agreement with fp32", "", f"Machine: {machine_description()}", "",
             "Generated by `python benchmarks/bf16.py --agreement RUN=DATA ...` (rows of earlier calls kept; the "
             f"latest on {time.strftime('%Y-%m-%d')}): each run's test split predicted "
             "by `Predictor.from_run(run)` (fp32) and `Predictor.from_run(run, precision='bf16')` (autocast), at the "
             "recipe's evaluation size, labels compared pixel by pixel; Dice per foreground class and case, mean.", "",
             "| run | model | cases | pixels | masks agree | mean Dice fp32 | mean Dice bf16 | Δ | guard (>= 99.5 %, abs Δ <= 0.002) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        delta = r["mean_dice_bf16"] - r["mean_dice_fp32"]
        ok = r["agreement"] >= 0.995 and abs(delta) <= 0.002
        lines.append(f"| `{Path(r['run']).parent.name}/{Path(r['run']).name}` | {r['model']} | {r['cases']} | {r['pixels']:,} | {100 * r['agreement']:.3f} % | "
                     f"{r['mean_dice_fp32']:.4f} | {r['mean_dice_bf16']:.4f} | {delta:+.4f} | {'met' if ok else 'MISSED'} |")
    write_results("bf16_agreement", lines, rows)


def run_agreement(run: Path, data: Path) -> dict[str, Any]:
    from medseg.data.readers import build_reader
    from medseg.engine.predict import Predictor
    from medseg.metrics.overlap import dice

    p32, p16 = Predictor.from_run(run), Predictor.from_run(run, precision="bf16")
    reader = build_reader(p32.cfg.data.model_copy(update={"root": str(data)}))
    same = total = 0
    d32, d16 = [], []
    ids = reader.ids(p32.cfg.data.test_split)
    for cid in ids:
        case = reader.load(cid)
        a, _ = p32.predict_case(case)
        b, _ = p16.predict_case(case)
        same += int((a == b).sum())
        total += a.size
        gt = np.asarray(case.label)
        for c in range(1, p32.num_classes):
            d32.append(dice(a == c, gt == c))
            d16.append(dice(b == c, gt == c))
    return {"run": str(run), "model": p32.cfg.model.name, "cases": len(ids), "pixels": total, "agreement": same / total,
            "mean_dice_fp32": float(np.nanmean(d32)), "mean_dice_bf16": float(np.nanmean(d16))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(PAPER_MODELS))
    ap.add_argument("--run", type=Path, default=None, help="a trained run folder for the agreement on real predictions")
    ap.add_argument("--data", type=Path, default=None, help="its data folder")
    ap.add_argument("--agreement", action="append", default=[], metavar="RUN=DATA",
                    help="only the fp32/bf16 agreement of trained runs on their test splits (repeatable); "
                         "writes bf16_agreement.md")
    ap.add_argument("--official", type=Path, default=None, metavar="DIR",
                    help="a checkout of github.com/Xiaoqi-Zhao-DLUT/MSNet-M2SNet (outside this repository): also time "
                         "the authors' MSNet / M2SNet forward in fp32")
    ap.add_argument("--compile", action="store_true",
                    help="also time bf16 under torch.compile (Inductor, freezing); reports the compile time")
    args = ap.parse_args()
    if args.agreement:
        write_agreements([run_agreement(Path(r), Path(d)) for r, d in (a.split("=", 1) for a in args.agreement)])
        return
    from medseg.engine.fast import cpu_bf16_flags

    torch.set_grad_enabled(False)
    rows = [bench_model(n, args.repeats, args.official, args.compile) for n in args.models.split(",")]
    measured = len(rows)
    rows = merged_rows("bf16", rows, "model", field="models")  # rows of models not re-run are kept
    kept = len(rows) - measured
    trained = run_agreement(args.run, args.data) if args.run else None
    lines = ["# bf16 inference on the CPU (fast path, batch 1, paper size)", "",
             f"Machine: {machine_description()}; native bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}", "",
             f"Generated by `python {' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')}"
             + (" (rows of models not named were kept from earlier calls, see bf16.json for each row's settings)"
                if kept else ", all models in this one run") + ". Random weights with calibrated",
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
    extra = [r for r in rows if "latency_official_fp32_ms" in r or "latency_bf16_compiled_ms" in r]
    if extra:
        lines += ["", "Against the authors' code (their `model/miccai_msnet.py`, fp32, as released: no folding, "
                  "contiguous) and under `torch.compile` (Inductor with `freezing`, bf16 autocast), same run, same "
                  "interleaving; ratios are latencies over the official fp32 latency:", "",
                  "| model | official fp32 (ms) | fast fp32 / official | fast bf16 / official | compiled bf16 (ms) "
                  "| compiled bf16 / official | compiled: % of bf16 matmul | compile (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        def cell(v: float | None) -> str:
            return "–" if v is None else f"{v:.0f}"

        def ratio(v: float | None, ref: float | None) -> str:
            return "–" if v is None or ref is None else f"{v / ref:.2f}"

        for r in extra:
            off, comp = r.get("latency_official_fp32_ms"), r.get("latency_bf16_compiled_ms")
            lines.append(f"| {r['model']} | {cell(off)} | {ratio(r['latency_fp32_ms'], off)} | "
                         f"{ratio(r['latency_bf16_ms'], off)} | {cell(comp)} | {ratio(comp, off)} | "
                         f"{cell(r.get('pct_bf16_matmul_compiled'))} | {cell(r.get('compile_s'))} |")
    lines += ["", "Random weights give many near-tie pixels (logits near 0), so the random-input agreement is a lower bound."]
    if trained:
        lines += ["", f"Trained run ({trained['model']}, `{trained['run']}`, its test split, {trained['pixels']} pixels): "
                  f"masks agree on {100 * trained['agreement']:.3f} %; mean foreground Dice fp32 {trained['mean_dice_fp32']:.4f}, "
                  f"bf16 {trained['mean_dice_bf16']:.4f} (Δ {trained['mean_dice_bf16'] - trained['mean_dice_fp32']:+.4f})."]
    write_results("bf16", lines, {"models": rows, "trained_run": trained})


if __name__ == "__main__":
    main()
