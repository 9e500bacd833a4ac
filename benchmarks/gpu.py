"""CUDA checks and timings (run by hand on a machine with a GPU; writes benchmarks/results/gpu.md).

1. Equality on CUDA: for every paper model at its paper size, the fast path (Conv+BN folded,
   channels_last) against the plain model in fp32 (max |Δlogits|), and bf16 autocast against fp32
   (max |Δ| and the fraction of pixels whose predicted label changes) -- the AMP inference path.
2. ``medseg stats --device cuda`` for every registered model: bf16 AMP + channels_last (fast path),
   fp32 (fast path), and bf16 + ``torch.compile`` for the paper models.
3. One short AMP training run of each paper model through the engine (Lightning, ``precision`` auto =
   bf16-mixed on this GPU, channels_last input) on built-in data: the CUDA training path runs and the
   loss is finite.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.md] [--compile-models m2snet,snet] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

PAPER_MODELS = ["msnet", "m2snet", "mgrad_unet", "snet", "mda_unet"]


DEVICE = "cuda"
SMOKE = False  # --smoke: tiny sizes, for trying the script on a CPU


def _size(name: str) -> tuple[int, int]:
    from medseg.models import get_entry

    entry = get_entry(name)
    return (2 * entry.stride, 2 * entry.stride) if SMOKE else tuple(entry.default_size)


def _labels(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(1)


def equality_rows() -> list[str]:
    from medseg.engine.fast import (
        calibrate_batchnorm,
        keep_fp32_under_autocast,
        optimize_for_inference,
        set_fixed_filter_fast,
    )
    from medseg.models import build_model
    from medseg.stats import paper_figures

    lines = ["| model | size | fast vs plain fp32 max abs Δ | bf16 AMP vs fp32 max abs Δ | labels changed by bf16 |",
             "|---|---|---|---|---|"]
    for name in PAPER_MODELS:
        fig = paper_figures(name)
        cin, cout = fig.get("in_channels", 3), fig.get("out_channels", 1)
        h, w = _size(name)
        torch.manual_seed(0)
        x = torch.randn(2, cin, h, w, device=DEVICE)
        plain = build_model(name, in_channels=cin, out_channels=cout).to(DEVICE)
        set_fixed_filter_fast(plain, False)
        calibrate_batchnorm(plain, x, seed=1)
        fast = optimize_for_inference(copy.deepcopy(plain), channels_last=True, example_input=x[:1])
        set_fixed_filter_fast(fast, True)
        keep_fp32_under_autocast(fast)  # the model's fp32 islands, as `predict --precision bf16` runs it
        with torch.inference_mode():
            ref = plain(x).logits.float()
            out = fast(x).logits.float()
            with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
                amp = fast(x).logits.float()
        changed = (_labels(amp) != _labels(ref)).float().mean().item()
        lines.append(f"| {name} | {h}x{w} | {(out - ref).abs().max().item():.2e} | {(amp - ref).abs().max().item():.2e} "
                     f"| {100 * changed:.3f} % |")
        del plain, fast
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return lines


def stats_tables(compile_models: list[str]) -> list[str]:
    from medseg.models import model_names
    from medseg.stats import model_stats, stats_table

    out = []
    settings = [("bf16 AMP, channels_last, fast path", dict(amp="bf16", channels_last=True), model_names()),
                ("fp32, channels_last, fast path", dict(amp=None, channels_last=True), model_names())]
    if compile_models:
        settings.append(("bf16 AMP, channels_last, fast path + torch.compile", dict(amp="bf16", channels_last=True,
                                                                                    compile=True), compile_models))
    for title, kw, names in settings:
        t0 = time.perf_counter()
        rows = [model_stats(n, size=_size(n), batch=2 if SMOKE else 16, device=DEVICE, repeats=2 if SMOKE else 20,
                            warmup=1 if SMOKE else 5, matmul_n=256 if SMOKE else None, **kw) for n in names]
        out += [f"### {title}", "", stats_table(rows, fmt="md"), f"({time.perf_counter() - t0:.0f} s)", ""]
    return out


def training_rows() -> list[str]:
    import statistics

    from _timing import StepTimer

    from medseg.config import load_config
    from medseg.engine.train import fit

    lines = ["| model | size | batch | steps | precision | median s/step (after 2 warm-up) | first / last loss |",
             "|---|---|---|---|---|---|---|"]
    sizes = {"msnet": 352, "m2snet": 352, "mgrad_unet": 224, "snet": 224, "mda_unet": 256}
    if SMOKE:
        sizes = dict.fromkeys(sizes, 64)
    with tempfile.TemporaryDirectory() as tmp:
        for name in PAPER_MODELS:
            overrides = [
                f"model.name={name}", "model.kwargs={}", f"data.size=[{sizes[name]},{sizes[name]}]",
                "loss.terms=[{loss: dice_ce, output: logits}]",  # the quickstart's aux/fused term is SNet's
                "data.batch_size=8", f"data.builtin_count={16 if SMOKE else 96}", f"data.num_workers={0 if SMOKE else 4}",
                "trainer.max_epochs=3", f"trainer.max_steps={3 if SMOKE else 12}", "trainer.max_time_s=null",
                f"trainer.accelerator={'cpu' if DEVICE == 'cpu' else 'gpu'}", "trainer.devices=1",
                "trainer.progress=false", "trainer.overlays=0",
            ]
            if name == "mgrad_unet":
                overrides.append("strategy.name=feedback")
            cfg = load_config("quickstart", overrides)
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"root": str(Path(tmp) / "data")})})
            timer = StepTimer()
            fit(cfg, out=Path(tmp) / name, callbacks=[timer])
            from medseg.engine.train import resolve_precision

            per = statistics.median(timer.seconds[2:] or timer.seconds)
            loss = f"{timer.losses[0]:.3f} / {timer.losses[-1]:.3f}" if timer.losses else "-"
            lines.append(f"| {name} | {sizes[name]} | 8 | {len(timer.seconds)} | "
                         f"{resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)} | {per:.3f} | {loss} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu.md")
    ap.add_argument("--compile-models", default=",".join(PAPER_MODELS),
                    help="comma-separated models also timed with torch.compile ('' for none)")
    ap.add_argument("--only", choices=["equality", "stats", "train"], nargs="*")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: try the script without a GPU")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global DEVICE, SMOKE
    if args.smoke:
        DEVICE, SMOKE = "cpu", True
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    else:
        # strict fp32 for the fp32 rows (cuDNN and cuBLAS would otherwise use TF32); AMP rows use bf16
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    parts = args.only or ["equality", "stats", "train"]
    dev_name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (smoke run)"
    lines = ["# GPU checks and timings", "", f"Machine: {machine_description()}", "",
             f"Device: {dev_name}, CUDA {torch.version.cuda}, torch {torch.__version__}; fp32 rows without TF32.", ""]
    if "equality" in parts:
        lines += ["## Fast path and AMP on CUDA (batch 2, random weights with calibrated BatchNorm)", ""] + equality_rows() + [""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    if "train" in parts:
        lines += ["## AMP training through the engine (built-in phantom-ct, 12 steps)", ""] + training_rows() + [""]
        args.out.write_text("\n".join(lines) + "\n")
    if "stats" in parts:
        lines += ["## medseg stats --device cuda (batch 16 throughput, batch 1 latency)", ""] + stats_tables([m for m in args.compile_models.split(",") if m])
        args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
