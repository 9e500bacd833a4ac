"""Model statistics: MACs against hand counts, parameters, timings, tables, paper figures."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medseg.models import build_model, count_parameters, model_names
from medseg.stats import PAPER_FIGURES, count_macs, matmul_gflops, model_stats, stats_table

TINY_UNET = {"features": (4, 8, 16, 32, 64, 4)}


def test_count_macs_single_conv_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.randn(1, 3, 16, 16)) == 16 * 16 * 8 * 3 * 3 * 3  # bias adds are not MACs
    assert count_macs(conv, torch.randn(2, 3, 16, 16)) == 2 * 16 * 16 * 8 * 3 * 3 * 3
    assert count_macs(nn.Linear(10, 5), torch.randn(4, 10)) == 4 * 10 * 5


def test_matmul_gflops_positive():
    assert matmul_gflops(128, "cpu", repeats=2) > 0


def test_model_stats_tiny_unet():
    row = model_stats("unet", size=(64, 64), batch=2, model_kwargs=TINY_UNET, warmup=1, repeats=2, matmul_n=512)
    plain = build_model("unet", in_channels=3, out_channels=1, **TINY_UNET).eval()
    assert row["params_trainable"] == count_parameters(plain) == row["params_total"]
    # folding BN and channels_last change no convolution: same MACs as the plain model
    assert row["gmacs"] == pytest.approx(count_macs(plain, torch.randn(1, 3, 64, 64)) / 1e9, rel=0, abs=1e-12)
    assert row["gmacs_literal"] is None
    assert row["latency_ms"] > 0 and row["throughput_ips"] > 0
    assert row["gflops"] == pytest.approx(2 * row["gmacs"] / (row["latency_ms"] / 1e3))
    assert 0 < row["matmul_ratio"] < 5
    assert row["peak_mem_mb"] is None or row["peak_mem_mb"] > 0
    assert row["paper_params"] is None
    md = stats_table([row], fmt="md")
    assert md.startswith("| model |") and "| unet | 64x64 | 3→1 |" in md
    assert json.loads(stats_table([row], fmt="json"))[0]["params_trainable"] == row["params_trainable"]
    with pytest.raises(ValueError):
        stats_table([row], fmt="csv")


@pytest.mark.skipif("m2snet" not in model_names(), reason="m2snet not registered yet")
def test_literal_fixed_filter_macs_by_hand():
    """The literal all-ones (C, C, k, k) convolution costs C*C*k*k*h*w per call, the fast one k*k*h*w."""
    from medseg.layers.fusion import FixedFilter

    calls = []
    model = build_model("m2snet")
    for m in model.modules():
        if isinstance(m, FixedFilter):
            m.register_forward_pre_hook(lambda mod, a: calls.append((a[0].shape, mod.kernel_size)))
    count_macs(model.eval(), torch.randn(1, 3, 64, 64))
    expected = sum((s[1] * s[1] - 1) * k * k * s[2] * s[3] for s, k in calls)
    row = model_stats("m2snet", size=64, batch=1, warmup=0, repeats=1, memory=False, matmul_gflops_ref=1.0)
    assert len(calls) == 2 * 2 * 10  # 10 units x 2 operands x kernels (3, 5)
    assert round((row["gmacs_literal"] - row["gmacs"]) * 1e9) == expected
    assert row["paper_params_ours_expected"] == row["params_trainable"] == 27_692_585


def test_paper_figures_table():
    assert PAPER_FIGURES["msnet"]["params"] == 29_741_329
    assert PAPER_FIGURES["msnet"]["params_ours_expected"] == 27_692_329
    assert PAPER_FIGURES["msnet"]["gmacs"] == 16.9 and PAPER_FIGURES["msnet"]["gmacs_size"] == (352, 352)
    assert PAPER_FIGURES["m2snet"]["params_ours_expected"] == 27_692_585
    assert PAPER_FIGURES["snet"]["params"] == 38_700_000
    assert PAPER_FIGURES["mda_unet"]["params"] is None


def test_attention_macs_counted_on_cpu():
    """torch's FlopCounterMode has no formula for the CPU attention kernel; count_macs adds the GPU kernels'
    one: softmax(Q K^T) V costs B*h*Nq*Nk*(d + d_v) multiply-accumulates (here 2*10*6*(8+8) = 1920)."""

    class Attend(torch.nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            kv = q[:, :, :6]
            return torch.nn.functional.scaled_dot_product_attention(q, kv, kv)

    assert count_macs(Attend(), torch.randn(1, 2, 10, 8)) == 1 * 2 * 10 * 6 * (8 + 8)


def test_bf16_stats_run_the_models_fp32_islands(monkeypatch):
    """stats times a model as `predict --precision bf16` runs it: with its bf16_fp32_modules in fp32."""
    import medseg.engine.fast as fast

    wrapped: list[tuple[str, ...]] = []
    real = fast.keep_fp32_under_autocast
    monkeypatch.setattr(fast, "keep_fp32_under_autocast", lambda m: wrapped.append(m.bf16_fp32_modules) or real(m))
    model_stats("mda_unet", size=32, batch=1, in_channels=1, out_channels=2, amp="bf16", warmup=0, repeats=1,
                memory=False, matmul_gflops_ref=1.0, model_kwargs={"channels": [4, 8, 16, 32, 64]})
    assert wrapped == [("encoder.0",)]
    model_stats("mda_unet", size=32, batch=1, in_channels=1, out_channels=2, warmup=0, repeats=1,
                memory=False, matmul_gflops_ref=1.0, model_kwargs={"channels": [4, 8, 16, 32, 64]})
    assert len(wrapped) == 1  # fp32 stats leave the model as it is
