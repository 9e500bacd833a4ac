"""One training step (forward, loss, backward, AdamW) in fp32 vs bf16 autocast, contiguous vs channels_last.

The four variants of one model are timed interleaved (round-robin, median of the repeats after a warm-up),
from random weights and inputs; the ratio to fp32 contiguous is what counts (absolute times move with the
machine's load: never run it beside another job, two PyTorch processes on 2 cores slow each other far more
than 2x). Two kinds of setup: the CPU presets (``*_cpu``: their reduced widths, batch and size) and the
paper models as published (``*_paper``: default widths at the paper's input size, batch 2, MDA-U-Net's
512^2 at batch 1), which is what issue 17's ">= 1.6x at paper size" asks about.

    python benchmarks/train_step_bf16.py [--only unet_kvasir_cpu,msnet_paper] [--paper | --cpu] [--repeats 5]

Results: ``benchmarks/results/train_step_bf16.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description, merged_rows, write_results  # noqa: E402

#: name -> model, kwargs, in_channels, batch, size: the CPU presets' settings
SETUPS: dict[str, dict[str, Any]] = {
    "unet_kvasir_cpu": {"model": "unet", "kwargs": {"features": [32, 32, 64, 128, 256, 32]}, "cin": 3, "batch": 16, "size": 128},
    "resunet_kvasir": {"model": "timm_unet", "kwargs": {"backbone": "resnet34"}, "cin": 3, "batch": 16, "size": 128},
    "msnet_cpu": {"model": "msnet", "kwargs": {"pretrained": None}, "cin": 3, "batch": 8, "size": 128},
    "m2snet_cpu": {"model": "m2snet", "kwargs": {"pretrained": None}, "cin": 3, "batch": 8, "size": 128},
    "mgrad_unet_acdc_cpu": {"model": "mgrad_unet", "kwargs": {"encoder_channels": [16, 32, 64, 128, 256], "width": 16},
                            "cin": 1, "batch": 12, "size": 96},
    "snet_acdc_cpu": {"model": "snet", "kwargs": {"cnn_channels": [16, 32, 64, 128, 256], "vit_dims": [16, 32, 64, 128],
                                                  "vit_strides": [4, 8, 16, 32]}, "cin": 1, "batch": 12, "size": 96},
    "unet_acdc_cpu": {"model": "unet", "kwargs": {"features": [16, 32, 64, 128, 256, 16]}, "cin": 1, "batch": 12, "size": 96},
    "mda_unet_cpu": {"model": "mda_unet", "kwargs": {"channels": [16, 32, 64, 128, 256]}, "cin": 1, "batch": 4, "size": 128},
    # the paper models as published, at their paper sizes (registry default_size)
    "msnet_paper": {"model": "msnet", "kwargs": {"pretrained": None}, "cin": 3, "batch": 2, "size": 352},
    "m2snet_paper": {"model": "m2snet", "kwargs": {"pretrained": None}, "cin": 3, "batch": 2, "size": 352},
    "mgrad_unet_paper": {"model": "mgrad_unet", "kwargs": {}, "cin": 1, "batch": 2, "size": 224},
    "snet_paper": {"model": "snet", "kwargs": {}, "cin": 1, "batch": 2, "size": 224},
    "mda_unet_paper": {"model": "mda_unet", "kwargs": {}, "cin": 1, "batch": 1, "size": 512},
}
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def bench(name: str, repeats: int) -> dict[str, Any]:
    from medseg.engine.fast import to_channels_last
    from medseg.models import build_model

    spec = SETUPS[name]
    torch.manual_seed(0)
    runs = {}
    for prec, cl in VARIANTS:
        model = build_model(spec["model"], in_channels=spec["cin"], out_channels=1, **spec["kwargs"]).train()
        if cl:
            to_channels_last(model)
        runs[(prec, cl)] = (model, torch.optim.AdamW(model.parameters(), 1e-3))
    x = torch.randn(spec["batch"], spec["cin"], spec["size"], spec["size"])
    y = (torch.rand(spec["batch"], 1, spec["size"], spec["size"]) > 0.5).float()
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    for rep in range(repeats + 1):  # the first round warms up
        for v in VARIANTS:
            model, opt = runs[v]
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v[0] == "bf16"):
                out = model(x).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rep:
                times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(t) for v, t in times.items()}
    base = med[("fp32", False)]
    row = {"setup": name, **{k: spec[k] for k in ("model", "batch", "size")},
           "seconds": {f"{p}{'_cl' if cl else ''}": med[(p, cl)] for p, cl in VARIANTS},
           "speedup": {f"{p}{'_cl' if cl else ''}": base / med[(p, cl)] for p, cl in VARIANTS}}
    print(row, flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| setup | model | batch | size | fp32 (s) | bf16 | fp32 + channels_last | bf16 + channels_last | goal >= 1.6x |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sp, best = r["speedup"], max(r["speedup"].values())
        lines.append(f"| {r['setup']} | {r['model']} | {r['batch']} | {r['size']} | {r['seconds']['fp32']:.3f} | "
                     f"{sp['bf16']:.2f}x | {sp['fp32_cl']:.2f}x | {sp['bf16_cl']:.2f}x | {'met' if best >= 1.6 else 'missed'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated setups (default: all)")
    ap.add_argument("--paper", action="store_true", help="only the paper-size setups (*_paper)")
    ap.add_argument("--cpu", action="store_true", help="only the CPU-preset setups")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from medseg.engine.fast import cpu_bf16_flags

    names = [n for n in args.only.split(",") if n] or [
        n for n in SETUPS if not (args.paper and not n.endswith("_paper")) and not (args.cpu and n.endswith("_paper"))]
    unknown = [n for n in names if n not in SETUPS]
    if unknown:
        raise SystemExit(f"unknown setup(s) {unknown}: {', '.join(SETUPS)}")
    rows = [bench(n, args.repeats) for n in names]
    for r in rows:
        r["date"], r["repeats"] = time.strftime("%Y-%m-%d"), args.repeats
    order = list(SETUPS)  # rows of setups not re-run are kept, in the order of SETUPS
    rows = sorted((r for r in merged_rows("train_step_bf16", rows, "setup") if r["setup"] in SETUPS),
                  key=lambda r: order.index(r["setup"]))
    lines = ["# Training step on the CPU: fp32 vs bf16 autocast, contiguous vs channels_last", "",
             f"Machine: {machine_description()}; native bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}", "",
             f"Last generated by `python {' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')} (rows of setups not "
             f"named were kept; each row's date and repeats are in the .json), with no other job on the machine: "
             f"forward + BCE loss + backward + AdamW step from random weights, the four variants of a model "
             f"interleaved, median of the repeats after a warm-up round; speed-up = fp32 contiguous time / time.",
             "", "## Paper models as published, at their paper sizes (issue 17's goal)", ""]
    lines += table([r for r in rows if r["setup"].endswith("_paper")])
    lines += ["", "## CPU presets (reduced widths, the presets' batch and size)", ""]
    lines += table([r for r in rows if not r["setup"].endswith("_paper")])
    lines += ["", "An earlier version of this file (4 December) reported 0.24-1.08x for bf16: it was measured while other "
              "PyTorch jobs shared the 2 cores, where oversubscribed threads dominate every time."]
    write_results("train_step_bf16", lines, rows)


if __name__ == "__main__":
    main()
