"""bf16 inference (``--precision``): CPU flag detection, fallback, and fp32 agreement on a tiny trained run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli import app
from medseg.engine import fast
from medseg.engine.fast import inference_autocast, read_bf16_flags, resolve_inference_precision
from medseg.engine.predict import Predictor
from tiny_runs import TINY_UNET, make_ct, train_tiny

runner = CliRunner()
# 12 epochs, not the CLI tests' 2: after 2 epochs the tiny UNet is untrained (every pixel's top-2 probability margin
# < 1e-3), so bf16 rounding flips 0.7 % of its near-ties; after 12 epochs bf16 agrees on 99.89 %, after 30 on 99.98 %
TINY = [*TINY_UNET, "trainer.max_epochs=12"]  # fp32 and bf16 masks agree only once the margins are not ~0


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx2\n")
    assert read_bf16_flags(str(info)) == ("avx512_bf16",)
    info.write_text("flags\t\t: fpu sse avx2 amx_tile amx_bf16\n")
    assert read_bf16_flags(str(info)) == ("amx_bf16",)
    info.write_text("flags\t\t: fpu sse avx2\n")
    assert read_bf16_flags(str(info)) == ()
    assert read_bf16_flags(str(tmp_path / "absent")) == ()


def test_precision_resolution_and_fallback(monkeypatch, caplog):
    assert resolve_inference_precision(None) == "fp32"
    assert resolve_inference_precision("fp32") == "fp32"
    monkeypatch.setattr(fast, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert resolve_inference_precision("bf16") == "bf16" and resolve_inference_precision("auto") == "bf16"
    monkeypatch.setattr(fast, "cpu_bf16_flags", lambda: ())
    with caplog.at_level(logging.WARNING, logger="medseg.engine.fast"):
        assert resolve_inference_precision("auto") == "fp32"
        assert not caplog.records  # auto falls back silently
        assert resolve_inference_precision("bf16") == "fp32"
    assert len(caplog.records) == 1 and "running in fp32" in caplog.records[0].getMessage()
    with pytest.raises(Exception, match="precision must be one of"):
        resolve_inference_precision("fp16")


def test_autocast_context_only_for_bf16():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with inference_autocast("fp32"):
        assert lin(x).dtype == torch.float32
    with inference_autocast("bf16"):
        assert lin(x).dtype == torch.bfloat16


def test_cli_rejects_a_bad_precision(tmp_path):
    res = runner.invoke(app, ["predict", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                              "--precision", "fp16"])
    assert res.exit_code == 2 and "--precision must be fp32, bf16 or auto" in res.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    data = make_ct(tmp_path_factory, count=24)
    return train_tiny(data, tmp_path_factory, TINY, name="tiny"), data


@pytest.mark.skipif(not fast.bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_bf16_masks_agree_with_fp32_on_a_trained_run(tiny_run):
    run, data = tiny_run
    from medseg.data.readers import build_reader

    p32 = Predictor.from_run(run)
    p16 = Predictor.from_run(run, precision="bf16")
    assert (p32.precision, p16.precision) == ("fp32", "bf16")
    reader = build_reader(p32.cfg.data.model_copy(update={"root": str(data)}))
    ids = reader.ids("test")
    assert ids
    same = total = 0
    for cid in ids:
        case = reader.load(cid)
        a, _ = p32.predict_case(case)
        b, pb = p16.predict_case(case)
        assert pb.dtype == np.float32
        same += int((a == b).sum())
        total += a.size
    assert same / total >= 0.995, same / total


@pytest.mark.skipif(not fast.bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_cli_predict_and_evaluate_take_precision(tiny_run, tmp_path):
    run, data = tiny_run
    res = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "--split", "test", "--precision", "bf16",
                              "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    imgs = sorted((data).rglob("*.png"))[:1]
    assert imgs
    res = runner.invoke(app, ["predict", str(run), "--input", str(imgs[0]), "--output", str(tmp_path / "pr"),
                              "--precision", "auto"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "pr").glob("*.png"))) == 1


def test_training_precision_bf16_mixed_on_the_cpu(monkeypatch):
    from medseg.engine.train import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fast, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"  # not a measured speed-up on the CPU
    assert resolve_precision("16-mixed", "cpu") == "32-true"
    monkeypatch.setattr(fast, "cpu_bf16_flags", lambda: ())
    assert resolve_precision("bf16-mixed", "cpu") == "32-true"


def test_auto_picks_bf16_only_for_models_verified_on_trained_runs(monkeypatch, caplog):
    monkeypatch.setattr(fast, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    with caplog.at_level(logging.WARNING, logger="medseg.engine.fast"):
        assert resolve_inference_precision("auto", model="msnet") == "bf16"
        assert not caplog.records
        assert resolve_inference_precision("auto", model="mda_unet") == "bf16"  # verified with its fp32 stem
        assert resolve_inference_precision("auto", model="unetpp") == "fp32"  # never checked
        assert "not been checked" in caplog.records[-1].getMessage()
        caplog.clear()
        assert resolve_inference_precision("bf16", model="unetpp") == "bf16"  # asked for: runs
        assert not caplog.records


def test_declared_submodules_stay_fp32_under_bf16_autocast():
    class Toy(torch.nn.Module):
        bf16_fp32_modules = ("stem",)

        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1))
            self.body = torch.nn.Conv2d(4, 2, 3, padding=1)
            self.seen: dict[str, torch.dtype] = {}
            self.stem[0].register_forward_hook(lambda m, a, out: self.seen.update(conv=out.dtype))
            self.stem.register_forward_hook(lambda m, a, out: self.seen.update(stem=out.dtype))
            self.body.register_forward_pre_hook(lambda m, a: self.seen.update(body_in=a[0].dtype))

        def forward(self, x):
            return self.body(self.stem(x))

    model, x = Toy(), torch.rand(1, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(x.bfloat16())
    assert model.seen == {"conv": torch.bfloat16, "stem": torch.bfloat16, "body_in": torch.bfloat16}
    assert fast.keep_fp32_under_autocast(model) == 1
    assert fast.keep_fp32_under_autocast(model) == 1  # idempotent: wrapped once
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.bfloat16())
    # the bf16 input is computed in fp32 inside the island, whose output is cast back once for the consumers
    assert model.seen == {"conv": torch.float32, "stem": torch.bfloat16, "body_in": torch.bfloat16}
    assert out.shape == plain.shape
    ref = model(x)  # without autocast the wrapper changes nothing
    assert torch.allclose(ref, Toy.forward(model, x))


def test_mda_unet_declares_its_fp32_stem():
    from medseg.models import build_model

    model = build_model("mda_unet", in_channels=1, out_channels=3, channels=[4, 8, 16, 32, 64])
    assert all(isinstance(model.get_submodule(n), torch.nn.Module) for n in model.bf16_fp32_modules)


def test_fp32_island_survives_bn_folding():
    """An island on a conv that BN folding replaces (fuse_conv_bn_eval deep-copies it) runs the fused copy:
    a wrapper bound to the old conv would run its unfolded weights with the BN already gone."""

    class Toy(torch.nn.Module):
        bf16_fp32_modules = ("block.0",)

        def __init__(self) -> None:
            super().__init__()
            self.block = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
            self.head = torch.nn.Conv2d(4, 1, 1)

        def forward(self, x):
            return self.head(self.block(x))

    torch.manual_seed(0)
    model = Toy().eval()
    with torch.no_grad():
        model.block[1].running_mean.uniform_(2.0, 3.0)
        model.block[1].running_var.uniform_(4.0, 9.0)
    x = torch.rand(1, 1, 8, 8)
    with torch.inference_mode():
        ref = model(x)
    fast.keep_fp32_under_autocast(model)
    assert fast.fold_conv_bn(model) == 1
    assert getattr(model.block[0], "medseg_fp32", False)  # the fused copy is still an island
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)
