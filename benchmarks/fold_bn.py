"""Conv+BN folding: ours (``medseg.engine.fast.fold_conv_bn``) against ``torch.fx`` fusion and Inductor freezing.

    python benchmarks/fold_bn.py [--models msnet m2snet unet] [--repeats 3] [--threads 1] [--inductor]

Per model at its default size, batch 1, random weights with calibrated BatchNorm statistics: is the model
``torch.fx``-traceable (``torch.fx.experimental.optimization.fuse``), and if not, is it after the input-size
check is bypassed; max |logits - plain eval logits| of each path; latency medians, measured interleaved
(ours, fx, ours, fx, ...) because the CPU is shared; with ``--inductor`` also ``torch.compile`` under
``torch._inductor.config.patch(freezing=True)`` (compile time and latency).
Writes benchmarks/results/fold_bn.md and .json (``--out`` another stem).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_description  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE_CHECKED = ["_wrappers", "snet", "mda_unet", "msnet", "unetpp"]  # model modules calling check_input_size


def _size_check(on: bool) -> None:
    from medseg.layers.resize import check_input_size

    for mod in SIZE_CHECKED:
        importlib.import_module(f"medseg.models.{mod}").check_input_size = check_input_size if on else lambda *a, **k: None


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def _fx_fused(model: torch.nn.Module) -> tuple[Any, str]:
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model)), "yes"
    except Exception as err:  # noqa: BLE001 -- report why
        why = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
    _size_check(False)
    try:
        return fuse(copy.deepcopy(model)), f"only without the size check ({why})"
    except Exception as err:  # noqa: BLE001
        return None, f"no ({type(err).__name__}: {str(err).splitlines()[0][:90]})"
    finally:
        _size_check(True)


def bench(name: str, repeats: int, inductor: bool) -> dict[str, Any]:
    from medseg.engine.fast import calibrate_batchnorm, optimize_for_inference
    from medseg.models import build_model, get_entry

    size = tuple(get_entry(name).default_size)
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size)
    plain = calibrate_batchnorm(build_model(name, 3, 1), x)
    with torch.inference_mode():
        ref = _logits(plain(x)).float()
    ours = optimize_for_inference(copy.deepcopy(plain), example_input=x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    n_left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    fx, traceable = _fx_fused(plain)
    if fx is not None:  # a trace can succeed and still be a different network (branches decided on a Proxy)
        try:
            with torch.inference_mode():
                bad = float((_logits(fx(x)).float() - ref).abs().max())
            if bad > 1e-3:
                traceable += f", but the traced graph is wrong (max abs diff {bad:.2g})"
                fx = None
        except Exception as err:  # noqa: BLE001
            traceable += f", but the traced graph fails ({type(err).__name__}: {str(err).splitlines()[0][:90]})"
            fx = None
    paths: dict[str, Any] = {"ours": ours}
    if fx is not None:
        fx = fx.to(memory_format=torch.channels_last)  # both paths channels_last, as the fast path
        fx.register_forward_pre_hook(lambda m, a: (a[0].contiguous(memory_format=torch.channels_last),))
        paths["fx"] = fx
    row: dict[str, Any] = {"model": name, "size": list(size), "bn": n_bn, "bn_left_ours": n_left,
                           "fx_traceable": traceable}
    if fx is not None:
        row["bn_left_fx"] = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fx.modules())
    if inductor:
        t0 = time.perf_counter()
        try:
            with torch._inductor.config.patch(freezing=True), torch.inference_mode():
                comp = torch.compile(copy.deepcopy(plain).to(memory_format=torch.channels_last))
                comp(x.contiguous(memory_format=torch.channels_last))
            row["inductor_compile_s"] = round(time.perf_counter() - t0, 1)
            paths["inductor_freezing"] = lambda t: comp(t.contiguous(memory_format=torch.channels_last))
        except Exception as err:  # noqa: BLE001 -- no C++ compiler, unsupported op, ...
            row["inductor_compile_s"] = f"failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
    times: dict[str, list[float]] = {k: [] for k in paths}
    with torch.inference_mode():
        for k, f in paths.items():  # warm-up, and the outputs
            row[f"max_abs_diff_{k}"] = float((_logits(f(x)).float() - ref).abs().max())
        for _ in range(repeats):
            for k, f in paths.items():
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    for k, ts in times.items():
        row[f"ms_{k}"] = round(1000 * statistics.median(ts), 1)
        row[f"ms_{k}_all"] = [round(1000 * t, 1) for t in ts]
    for k in times:
        if k != "ours":
            row[f"ratio_{k}_over_ours"] = round(statistics.median(a / b for a, b in zip(times[k], times["ours"])), 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["msnet", "m2snet", "unet", "unetpp"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inductor", action="store_true")
    ap.add_argument("--out", default="fold_bn", help="results file stem under benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(m, args.repeats, args.inductor) for m in args.models]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"machine": machine_description(), "threads": args.threads,
                                                       "rows": rows}, indent=1))
    lines = [f"# Conv+BN folding: ours vs torch.fx fuse{' vs Inductor freezing' if args.inductor else ''}", "",
             f"{machine_description()}; {args.threads} torch thread(s); batch 1; {args.repeats} interleaved repeats, "
             "median; ratio = median of per-repeat ratios (shared CPU).", "",
             "| model | size | BN (left: ours / fx) | fx-traceable | max abs diff ours / fx | ms ours | ms fx | fx/ours |"
             + (" inductor compile s | ms inductor | ind./ours |" if args.inductor else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if args.inductor else "")]
    for r in rows:
        line = (f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['bn']} ({r['bn_left_ours']} / {r.get('bn_left_fx', '-')}) "
                f"| {r['fx_traceable']} | {r['max_abs_diff_ours']:.1e} / {r.get('max_abs_diff_fx', float('nan')):.1e} "
                f"| {r['ms_ours']} | {r.get('ms_fx', '-')} | {r.get('ratio_fx_over_ours', '-')} |")
        if args.inductor:
            line += (f" {r.get('inductor_compile_s', '-')} | {r.get('ms_inductor_freezing', '-')} "
                     f"| {r.get('ratio_inductor_freezing_over_ours', '-')} |")
        lines.append(line)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
