"""Model statistics: parameters, MACs, latency, throughput, peak memory and achieved GFLOP/s.

- **MACs** come from :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2). It counts
  convolutions, matrix products and attention -- the same operators fvcore counts; fvcore also adds
  small terms for batch norm, upsampling and pooling, so it reads a few per cent higher.
- **Latency** is the median batch-1 forward time after warm-up, under ``torch.inference_mode``;
  **throughput** the images per second of batch-``B`` forwards (median).
- **Peak memory**: CUDA: ``torch.cuda.max_memory_allocated`` during a batch-``B`` forward (weights
  included). CPU (Linux): weights plus the rise of the process's peak resident set (``VmHWM``, reset
  through ``/proc/self/clear_refs``) during the first batch-``B`` forward -- measured before any other
  forward so that freed-but-cached memory does not hide it; ``None`` with a note elsewhere.
- **Achieved GFLOP/s** = 2 MACs / latency, and its ratio to a large fp32 matrix product
  (:func:`matmul_gflops`) timed in the same run, on the same device and threads.
- **Paper figures** (:data:`PAPER_FIGURES`) sit beside ours where a paper or NOTES.md gives one.

``fast=True`` measures the fast inference path (:func:`medseg.engine.fast.optimize_for_inference`:
Conv+BN folded, fixed all-ones filters as channel sum + box filter); ``fast=False`` the plain eval
model with the official literal full all-ones convolutions. MACs are those of the path measured;
``gmacs_literal`` adds the literal count where the fixed filters make the two differ.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

_log = logging.getLogger(__name__)

# The papers' (or NOTES.md's) figures for our models: ``in_channels`` / ``out_channels`` of the paper's
# setting (the defaults of :func:`model_stats`), ``kind`` (paper / official code / estimate),
# ``params`` (trainable, with the in/out channels given in ``setting``), ``gmacs`` at ``gmacs_size``,
# where each comes from (``source``), and what our count should be (``params_ours_expected``).
PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "msnet": {
        "in_channels": 3,
        "out_channels": 1,
        "kind": "official code",
        "params": 29_741_329,
        "params_ours_expected": 27_692_329,
        "gmacs": 16.9,
        "gmacs_size": (352, 352),
        "setting": "in_channels=3, out_channels=1",
        "source": "official code (NOTES §2): 29,741,329 incl. the unused Res2Net fc (2,049,000); "
        "ours 27,692,329 without it; 16.9 GMACs at 352x352 by fvcore",
    },
    "m2snet": {
        "in_channels": 3,
        "out_channels": 1,
        "kind": "official code",
        "params": 29_741_585,
        "params_ours_expected": 27_692_585,
        "gmacs": None,
        "gmacs_size": None,
        "setting": "in_channels=3, out_channels=1",
        "source": "official code (NOTES §2): MSNet + two BatchNorm2d(64) (+256); 29,741,585 incl. the "
        "unused fc, ours 27,692,585; no GMACs published",
    },
    "snet": {
        "in_channels": 1,
        "out_channels": 9,
        "kind": "paper",
        "params": 38_700_000,
        "params_ours_expected": None,
        "gmacs": None,
        "gmacs_size": None,
        "setting": "in_channels=1, out_channels=9 (Synapse)",
        "source": "paper Table 4: 38.7M parameters",
    },
    "mgrad_unet": {
        "in_channels": 3,
        "out_channels": 9,
        "kind": "estimate",
        "params": 24_100_000,
        "params_ours_expected": None,
        "gmacs": None,
        "gmacs_size": None,
        "setting": "in_channels=3, out_channels=9",
        "source": "estimate of the addRA topology (NOTES §1): ~24.1M; the paper (Fig. 3) only claims the "
        "fewest parameters of the compared models",
    },
    "mda_unet": {
        "in_channels": 1,
        "out_channels": 3,
        "kind": "paper",
        "params": None,
        "params_ours_expected": None,
        "gmacs": None,
        "gmacs_size": None,
        "setting": "in_channels=1, out_channels=3 (KiTS: kidney, tumour)",
        "source": "the paper gives no parameter or FLOP count",
    },
}

_AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


# -- helpers ---------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (``repeats`` calls after ``warmup``)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _autocast(device: torch.device, amp: str | None) -> AbstractContextManager[Any]:
    if not amp:
        return nullcontext()
    if amp not in _AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(_AMP_DTYPES)} or None, got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``; a clear error where CUDA is asked for and absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from medseg.utils import MedsegError

        raise MedsegError("--device cuda: no CUDA device is available on this machine")
    return dev


def device_description(device: str | torch.device = "cpu") -> str:
    """A one-line description of the device (CPU model and thread count, or the GPU's name)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs (torch {torch.__version__})"


def _cpu_sdpa_flops(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q, k, v)


def count_macs(model: nn.Module, x: Tensor, **forward_kwargs: Any) -> int:
    """Multiply-accumulates of one ``model(x)`` by :class:`~torch.utils.flop_counter.FlopCounterMode`.

    torch's table has no formula for the CPU kernel of ``scaled_dot_product_attention``
    (``_scaled_dot_product_flash_attention_for_cpu``) and counts it as 0; it gets the formula of the
    GPU kernels here, so attention counts the same on both devices.
    """
    from torch.utils.flop_counter import FlopCounterMode

    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _cpu_sdpa_flops})
    with torch.inference_mode(), counter:
        model(x, **forward_kwargs)
    return int(counter.get_total_flops()) // 2


def matmul_gflops(n: int = 2048, device: str | torch.device = "cpu", *, dtype: torch.dtype = torch.float32,
                  warmup: int = 1, repeats: int = 5) -> float:
    """GFLOP/s (2 n^3 / time, median) of an ``n x n`` matrix product: the device's practical peak."""
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=dev, dtype=torch.float32).to(dtype)
    b = torch.randn(n, n, generator=g, device=dev, dtype=torch.float32).to(dtype)
    with torch.inference_mode():
        times = _timed(lambda: torch.mm(a, b), dev, warmup, repeats)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def _read_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``) so RSS starts from live data."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_memory_mb(fn: Callable[[], Any], device: torch.device, weights_bytes: int) -> tuple[float | None, str]:
    """Peak memory (MiB) of one call of ``fn`` and how it was measured."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated (weights included)"
    _release_free_memory()
    if _reset_peak_rss():
        before = _read_status_kb("VmRSS")
        fn()
        peak = _read_status_kb("VmHWM")
        if before is not None and peak is not None:
            delta = max(0, peak - before) * 1024
            return (weights_bytes + delta) / 2**20, "weights + peak RSS rise during the first forward (/proc VmHWM)"
    return None, "not measured: peak RSS cannot be reset on this platform"


def _fixed_filters(model: nn.Module) -> list[nn.Module]:
    from medseg.layers.fusion import FixedFilter

    return [m for m in model.modules() if isinstance(m, FixedFilter)]


def paper_figures(name: str) -> dict[str, Any]:
    """The :data:`PAPER_FIGURES` entry of ``name`` (empty dict when none)."""
    return dict(PAPER_FIGURES.get(name, {}))


# -- the statistics --------------------------------------------------------------------------------
def model_stats(
    name: str,
    size: tuple[int, int] | Sequence[int] | int | None = None,
    batch: int = 4,
    device: str | torch.device = "cpu",
    in_channels: int | None = None,
    out_channels: int | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    fast: bool = True,
    warmup: int = 2,
    repeats: int = 7,
    *,
    model_kwargs: dict[str, Any] | None = None,
    matmul_gflops_ref: float | None = None,
    matmul_n: int | None = None,
    compile: bool = False,
    memory: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics of one registered model (randomly initialised) as a flat, JSON-serialisable dict.

    Args:
        name: registered model name.
        size: (H, W), one int for a square, or ``None`` for the model's default (paper) size.
        batch: batch size of the throughput (and peak memory) measurement; latency is batch 1.
        device: ``cpu`` or ``cuda``.
        in_channels, out_channels, model_kwargs: how the model is built; channels default to the paper's
            setting (:data:`PAPER_FIGURES`), else 3 -> 1.
        amp: ``None`` (fp32), ``"bf16"`` or ``"fp16"`` autocast.
        channels_last: channels_last memory format for weights and input (default: with the fast path).
        fast: the fast inference path (see module docstring) or the plain model.
        warmup, repeats: forwards before / for the timings (throughput uses about half the repeats).
        matmul_gflops_ref: a matrix-product rate timed already in this run; ``None`` (default) times one
            right before this model's timings (on a shared machine the load drifts between models).
        matmul_n: matrix size of that reference (default 2048 on the CPU, 8192 on CUDA); it runs in the
            autocast dtype when ``amp`` is set (a bf16 model against a bf16 product), else fp32.
        compile: also ``torch.compile`` the fast path (where it works).
        memory: measure peak memory (one extra batch-``B`` forward).
        seed: seed of the weights and inputs.
    """
    from medseg.engine.fast import keep_fp32_under_autocast, optimize_for_inference, set_fixed_filter_fast
    from medseg.models import build_model, count_parameters, get_entry

    entry = get_entry(name)
    if size is None:
        size = tuple(entry.default_size)
    elif isinstance(size, int):
        size = (size, size)
    h, w = int(size[0]), int(size[1])
    from medseg.layers.resize import size_hint

    hint = size_hint(h, w, entry.stride)
    if hint:
        from medseg.utils import MedsegError

        raise MedsegError(f"{name}: size {h}x{w} is not a multiple of its stride {entry.stride}; {hint}")
    dev = resolve_device(device)
    paper = paper_figures(name)
    in_channels = paper.get("in_channels", 3) if in_channels is None else in_channels
    out_channels = paper.get("out_channels", 1) if out_channels is None else out_channels
    channels_last = fast if channels_last is None else channels_last
    torch.manual_seed(seed)
    model = build_model(name, in_channels=in_channels, out_channels=out_channels, **(model_kwargs or {}))
    params_trainable = count_parameters(model, trainable_only=True)
    params_total = count_parameters(model, trainable_only=False)
    weights_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    model = model.to(dev).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x1 = torch.randn(1, in_channels, h, w, device=dev).contiguous(memory_format=fmt)
    xb = torch.randn(batch, in_channels, h, w, device=dev).contiguous(memory_format=fmt)

    filters = _fixed_filters(model)
    gmacs_literal = None
    if filters and fast:
        set_fixed_filter_fast(model, False)
        gmacs_literal = count_macs(model, x1) / 1e9
    set_fixed_filter_fast(model, fast)
    if fast:
        optimize_for_inference(model, channels_last=channels_last, fold_bn=True, compile=compile, example_input=x1)
    elif channels_last:
        model = model.to(memory_format=torch.channels_last)
    if amp == "bf16":
        keep_fp32_under_autocast(model)  # the model's fp32 islands, as `predict --precision bf16` runs it

    def run(x: Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), _autocast(dev, amp):
                return model(x)

        return call

    peak_mb, peak_note = (None, "not measured")
    if memory:
        peak_mb, peak_note = _peak_memory_mb(run(xb), dev, weights_bytes)
    macs = count_macs(model, x1)
    matmul_n = matmul_n or (8192 if dev.type == "cuda" else 2048)
    matmul_dtype = _AMP_DTYPES[amp] if amp else torch.float32
    if matmul_gflops_ref is None:  # timed next to the model, so that both see the same machine load
        matmul_gflops_ref = matmul_gflops(matmul_n, dev, dtype=matmul_dtype)
    lat = _timed(run(x1), dev, warmup, repeats)
    thr = _timed(run(xb), dev, 1, max(2, (repeats + 1) // 2))
    latency = statistics.median(lat)
    achieved = 2.0 * macs / latency / 1e9
    row: dict[str, Any] = {
        "model": name,
        "size": [h, w],
        "batch": batch,
        "device": str(dev),
        "device_name": device_description(dev),
        "amp": amp,
        "channels_last": channels_last,
        "fast": fast,
        "compile": compile,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "params_trainable": params_trainable,
        "params_total": params_total,
        "gmacs": macs / 1e9,
        "gmacs_literal": gmacs_literal,
        "latency_ms": latency * 1e3,
        "latency_ms_min": min(lat) * 1e3,
        "throughput_ips": batch / statistics.median(thr),
        "peak_mem_mb": peak_mb,
        "peak_mem_note": peak_note,
        "gflops": achieved,
        "matmul_gflops": matmul_gflops_ref,
        "matmul_n": matmul_n,
        "matmul_dtype": str(matmul_dtype).removeprefix("torch."),
        "matmul_ratio": achieved / matmul_gflops_ref if matmul_gflops_ref else math.nan,
        "paper_kind": paper.get("kind"),
        "paper_params": paper.get("params"),
        "paper_params_ours_expected": paper.get("params_ours_expected"),
        "paper_gmacs": paper.get("gmacs"),
        "paper_gmacs_size": list(paper["gmacs_size"]) if paper.get("gmacs_size") else None,
        "paper_setting": paper.get("setting"),
        "paper_source": paper.get("source"),
    }
    _log.info("%s %dx%d: %.2f GMACs, %.1f ms, %.1f GFLOP/s (%.0f%% of matmul)", name, h, w, row["gmacs"],
              row["latency_ms"], achieved, 100 * row["matmul_ratio"])
    return row


def stats_rows(names: Iterable[str], *, device: str | torch.device = "cpu", **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`model_stats` for several models (each with its own matrix-product reference, timed next to it)."""
    dev = resolve_device(device)
    return [model_stats(n, device=dev, **kwargs) for n in names]


# -- tables ----------------------------------------------------------------------------------------
def _fmt_int_m(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} M"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def stats_table(rows: Sequence[dict[str, Any]], fmt: str = "md") -> str:
    """Rows of :func:`model_stats` as a Markdown table (with the run's settings below) or JSON."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt != "md":
        raise ValueError(f"fmt must be 'md' or 'json', got {fmt!r}")
    head = ["model", "size", "in→out", "params", "paper params", "GMACs", "paper GMACs", "latency b1 (ms)",
            "img/s", "peak mem (MiB)", "GFLOP/s", "matmul GFLOP/s", "% of matmul"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        gmacs = _fmt(r["gmacs"], ".2f")
        if r.get("gmacs_literal") is not None:
            gmacs += f" (literal {r['gmacs_literal']:.2f})"
        paper_gmacs = "-"
        if r.get("paper_gmacs") is not None:
            sz = r.get("paper_gmacs_size")
            paper_gmacs = f"{r['paper_gmacs']:.1f}" + (f" @{sz[0]}" if sz else "")
        paper_params = _fmt_int_m(r.get("paper_params"))
        if r.get("paper_params") is not None and r.get("paper_kind") in ("estimate", "official code"):
            paper_params += f" [{r['paper_kind']}]"
        if r.get("paper_params_ours_expected"):
            paper_params += f" (ours: {r['paper_params_ours_expected']:,})"
        cells = [
            r["model"],
            "x".join(str(s) for s in r["size"]),
            f"{r['in_channels']}→{r['out_channels']}",
            f"{r['params_trainable']:,}",
            paper_params,
            gmacs,
            paper_gmacs,
            _fmt(r["latency_ms"], ".1f"),
            f"{_fmt(r['throughput_ips'], '.2f')} (b{r['batch']})",
            _fmt(r["peak_mem_mb"], ".0f"),
            _fmt(r["gflops"], ".1f"),
            _fmt(r["matmul_gflops"], ".1f"),
            _fmt(100 * r["matmul_ratio"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        r0 = rows[0]
        settings = (
            f"{r0.get('device_name') or r0['device']}; matmul: {r0.get('matmul_dtype', 'float32')} "
            f"{r0.get('matmul_n')}x{r0.get('matmul_n')} "
            f"product timed before each model; amp {r0['amp'] or 'off'}; channels_last {r0['channels_last']}; "
            f"{'fast path' if r0['fast'] else 'plain model'}{'; torch.compile' if r0.get('compile') else ''}"
        )
        lines += ["", settings + ".", f"Peak memory: {r0['peak_mem_note']}.",
                  "GMACs: FlopCounterMode (conv/matmul/attention), batch 1 (literal: with the official full "
                  "all-ones convolutions). Paper params are for the paper's in/out channels (medseg.stats.PAPER_FIGURES)."]
    return "\n".join(lines) + "\n"
