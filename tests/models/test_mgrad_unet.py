import pytest
import torch

from medseg.config import load_config
from medseg.losses import Criterion
from medseg.models import build_model, count_parameters, get_entry

AUX = {"msd", "grad", "side1", "side2", "side3", "side4", "side5"}

# Exact trainable parameter counts (in_channels=3, out_channels=9 unless noted). NOTES §1 estimates
# ~24.1 M for the addRA topology; the author's addRA model has 36,992 more (decoder 1's unused smooth1).
PARAMS = 24_097_663
PARTS = {"encoder": 20_249_856, "adapters": 2_549_120, "msd": 629_385, "grad": 666_377, "side_heads": 2_925}
NO_RFB = 2_549_120 - (64 * (64 + 128 + 256 + 512 + 1024) + 5 * 2 * 64)  # RFBs -> 1x1 conv + BN
NO_RESIDUAL = sum(c * c + c + 2 * c for c in (64, 128, 256, 512, 1024))  # 1x1 conv (bias) + BN per stage


# Full width on the meta device (counts, keys) and in the one 224 x 224 forward/backward. Everything else
# spatial (96x160, feedback, gates, switches) runs on a narrow copy: same code paths, narrower channels.
TINY = {"encoder_channels": (8, 16, 32, 64, 128), "width": 8}


def _meta(in_ch: int = 3, out_ch: int = 9, **kw):
    with torch.device("meta"):
        return build_model("mgrad_unet", in_ch, out_ch, **kw)


def _tiny(in_ch: int = 1, out_ch: int = 4, **kw):
    torch.manual_seed(0)
    return build_model("mgrad_unet", in_ch, out_ch, **TINY, **kw)


def test_registry_entry():
    e = get_entry("mgrad_unet")
    assert e.default_size == (224, 224) and e.stride == 16 and e.paper == "MGRAD-UNet"


def test_parameter_count_recorded():
    m = _meta(3, 9)
    assert count_parameters(m) == PARAMS
    assert {n: count_parameters(c) for n, c in m.named_children()} == PARTS
    # grey input: the first conv has 2 * 64 * 9 fewer weights than the code's repeat-to-RGB input
    assert count_parameters(_meta(1, 9)) == PARAMS - 2 * 64 * 9
    # each class less removes one 1x1 output (64 weights + bias) from 7 heads (MSD, GRAD, 5 sides)
    assert count_parameters(_meta(3, 4)) == PARAMS - 5 * 7 * 65


def test_forward_backward_224():
    torch.manual_seed(0)
    m = build_model("mgrad_unet", 1, 9).train()
    x = torch.randn(1, 1, 224, 224)
    out = m(x)
    assert out.logits.shape == (1, 9, 224, 224)
    assert set(out.aux) == AUX
    assert all(v.shape == (1, 9, 224, 224) for v in out.aux.values())
    torch.testing.assert_close(out.logits, out.aux["msd"] + out.aux["grad"])
    fb = out.extras["feedback"]
    assert [tuple(f.shape) for f in fb] == [(1, 64, 224 >> k, 224 >> k) for k in range(5)]
    loss = out.logits.square().mean() + sum(v.square().mean() for v in out.aux.values())
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_odd_size_96x160_with_feedback_pass():
    m = _tiny(1, 4).train()
    x = torch.randn(2, 1, 96, 160)
    out = m(x)
    assert out.logits.shape == (2, 4, 96, 160) and all(v.shape == (2, 4, 96, 160) for v in out.aux.values())
    fb = out.extras["feedback"]
    assert [tuple(f.shape[-2:]) for f in fb] == [(96, 160), (48, 80), (24, 40), (12, 20), (6, 10)]
    assert all(f.requires_grad for f in fb)  # not detached by the model: the strategy detaches
    out2 = m(x, feedback=[f.detach() for f in fb])
    out2.logits.mean().backward()
    assert m.encoder.stages[0].conv1[0].weight.grad is not None


def test_invalid_size_and_feedback_errors():
    m = _tiny()
    with pytest.raises(ValueError, match="not a multiple of 16; nearest valid size is 96x144"):
        m(torch.randn(1, 1, 100, 150))
    x = torch.randn(1, 1, 32, 32)
    with pytest.raises(ValueError, match="5 tensors"):
        m(x, feedback=[torch.zeros(1, 8, 32, 32)])
    with pytest.raises(ValueError, match=r"feedback\[1\]"):
        m(x, feedback=[torch.zeros(1, 8, 32 >> k, 32 >> k) for k in (0, 0, 2, 3, 4)])


def test_feedback_changes_output_and_zero_feedback_does_not():
    m = _tiny().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        o1 = m(x)
        fb = o1.extras["feedback"]
        o2 = m(x, feedback=fb)
        o0 = m(x, feedback=[torch.zeros_like(f) for f in fb])
        o_big = m(x, feedback=[f * 1e3 for f in fb])
    assert all(f.abs().sum() > 0 for f in fb)
    assert (o2.logits - o1.logits).abs().max() > 0
    assert (o_big.logits - o1.logits).abs().max() > (o2.logits - o1.logits).abs().max()
    torch.testing.assert_close(o0.logits, o1.logits, rtol=0, atol=0)
    # Eq. 7: the returned feedback is lambda * (G_i - M_i)
    m.feedback_lambda = 2.0
    with torch.no_grad():
        fb2 = m(x).extras["feedback"]
    for a, b in zip(fb2, fb, strict=True):
        torch.testing.assert_close(a, b * 2.0 / 1e-3, rtol=1e-4, atol=1e-6)


def test_lambda_zero_feedback_has_no_effect():
    m = _tiny(feedback_lambda=0.0).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        o1 = m(x)
        assert all(f.abs().sum() == 0 for f in o1.extras["feedback"])
        o2 = m(x, feedback=o1.extras["feedback"])
    torch.testing.assert_close(o2.logits, o1.logits, rtol=0, atol=0)
    for k in o1.aux:
        torch.testing.assert_close(o2.aux[k], o1.aux[k], rtol=0, atol=0)


def test_switches_parameter_counts_and_outputs():
    full = {k: v.shape for k, v in _meta(3, 9).state_dict().items()}
    assert count_parameters(_meta(3, 9, use_rfb=False)) == PARAMS - NO_RFB == 21_676_159
    assert count_parameters(_meta(3, 9, residual_encoder=False)) == PARAMS - NO_RESIDUAL == 22_694_975
    for kw in ({"side_conv": False}, {"reverse_attention": False}, {"rfb_act": None}):
        # heads always exist: these switches never change the state_dict
        assert {k: v.shape for k, v in _meta(3, 9, **kw).state_dict().items()} == full
    _tiny(side_conv=False).load_state_dict(_tiny().state_dict())
    x = torch.randn(1, 1, 32, 32)
    for kw, names in (
        ({"side_conv": False}, {"msd", "grad"}),
        ({"use_rfb": False}, AUX),
        ({"reverse_attention": False}, AUX),
        ({"residual_encoder": False, "use_rfb": False, "side_conv": False}, {"msd", "grad"}),
    ):
        out = _tiny(**kw)(x)
        assert set(out.aux) == names and out.logits.shape == (1, 4, 32, 32)
        assert len(out.extras["feedback"]) == 5


def test_gates_reach_msd_unless_detached_and_are_used():
    x = torch.randn(2, 1, 32, 32)
    for ra, detach in ((True, False), (True, True), (False, False)):
        m = _tiny(reverse_attention=ra, detach_gate=detach).train()
        m(x).aux["grad"].sum().backward()
        # GRAD's loss reaches the shared encoder/RFB and GRAD itself ...
        assert m.adapters[0].conv_res[0].weight.grad is not None
        assert m.grad.pyramid.units[0][0][0].weight.grad is not None
        # ... and MSD only through non-detached gates (addRA default); never MSD's own logits head
        msd_grads = {n for n, p in m.msd.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if ra and not detach:
            assert msd_grads == {n for n, _ in m.msd.named_parameters() if not n.startswith("head.")}
        else:
            assert not msd_grads
    # ... but the gates are used: changing MSD's stage features changes GRAD's output (only with RA on)
    for ra, changes in ((True, True), (False, False)):
        m = _tiny(reverse_attention=ra).eval()
        with torch.no_grad():
            before = m(x).aux["grad"]
            m.msd.out1.weight.mul_(-3.0)
            after = m(x).aux["grad"]
        assert (not torch.equal(before, after)) is changes


# Constant maps R_i = i (levels 1..5) and gates w = (0.5, 0.5, 0.5, 0.5, 0.2), smooth = identity: the
# first-order DP inputs D_k (lower operand at level k) and the top T, by hand.
#   additive    (addRA):   T = 5 (1 + 0.2) = 6;  D_4 = |6 + 4 * 0.5| = 8,  D_3 = |4 + 1.5| = 5.5, D_2 = 4, D_1 = 2.5
#   subtractive (my_net):  T = 6;                D_4 = |6 - 2| = 4,        D_3 = |4 - 1.5| = 2.5, D_2 = 2, D_1 = 1.5
#   paper (Eq. 4 + Eq. 1): RA = (.5, 1, 1.5, 2, 4), T = 4; D_4 = |4 - 2| = 2, D_3 = D_2 = D_1 = 0.5
#   no gates:              T = 5;                D_k = |(k + 1) - k| = 1
GATE_CASES = {
    "additive": (6.0, [2.5, 4.0, 5.5, 8.0]),
    "subtractive": (6.0, [1.5, 2.0, 2.5, 4.0]),
    "paper": (4.0, [0.5, 0.5, 0.5, 2.0]),
    None: (5.0, [1.0, 1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("gate", list(GATE_CASES))
def test_grad_gate_forms_by_hand(gate):
    from medseg.models.mgrad_unet import DifferentialDecoder

    dec = DifferentialDecoder(1, width=1, gated=True, gate=gate or "additive").eval()
    dec.smooth = torch.nn.Identity()
    seen = {}
    for k, unit in enumerate(dec.pyramid.units[0]):
        unit.register_forward_pre_hook(lambda mod, args, k=k: seen.__setitem__(k, args[0]))
    feats = [torch.full((1, 1, 16 >> i, 16 >> i), float(i + 1)) for i in range(5)]
    gates = (
        None if gate is None else [torch.full_like(f, w) for f, w in zip(feats, (0.5, 0.5, 0.5, 0.5, 0.2))]
    )
    with torch.no_grad():
        _, stages = dec(feats, gates)
    top, dp = GATE_CASES[gate]
    torch.testing.assert_close(stages[4], torch.full_like(feats[4], top))
    for k, value in enumerate(dp):
        torch.testing.assert_close(seen[k], torch.full_like(feats[k], value))


def test_grad_gate_switch_keeps_state_dict_and_rejects_unknown():
    full = _meta(3, 9).state_dict().keys()
    for gate in ("subtractive", "paper"):
        assert _meta(3, 9, grad_gate=gate, detach_gate=True).state_dict().keys() == full
    with pytest.raises(ValueError, match="unknown grad_gate 'mul'"):
        _tiny(grad_gate="mul")
    x = torch.randn(1, 1, 32, 32)
    outs = {g: _tiny(grad_gate=g).eval()(x).aux["grad"] for g in ("additive", "subtractive", "paper")}
    assert not torch.equal(outs["additive"], outs["subtractive"]) and not torch.equal(
        outs["paper"], outs["subtractive"]
    )


@pytest.mark.parametrize("recipe", ["mgrad_unet_synapse", "mgrad_unet_acdc"])
def test_recipes_validate_and_match_model_outputs(recipe):
    synapse = recipe.endswith("synapse")
    cfg = load_config(recipe)
    assert cfg.model.name == "mgrad_unet" and cfg.data.format == "transunet" and cfg.data.size == (224, 224)
    assert (
        cfg.strategy.name == "feedback"
        and cfg.strategy.feedback_iters == 3
        and cfg.strategy.update == "per_pass"
    )
    # default = the author's code: AdamW 1e-4, wd 1e-4, constant; all training cases, last epoch (no val)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.schedule.name) == (
        "adamw",
        1e-4,
        1e-4,
        "constant",
    )
    assert cfg.data.val_split is None and load_config(recipe, ["preset=val"]).data.val_split == "val"
    assert cfg.trainer.max_epochs == 300 and cfg.data.in_channels == 1
    assert cfg.data.batch_size == (8 if synapse else 12)
    assert cfg.data.num_classes == (9 if synapse else 4) == len(cfg.data.class_names)
    # Synapse code: aggregated loss, addRA gates; ACDC code: weighted loss (Eqs. 12-13), my_net.py gates
    assert [t.loss for t in cfg.loss.terms] == ["dice_ce", "dice_ce", "aggregated" if synapse else "weighted"]
    gates = {k: cfg.model.kwargs[k] for k in ("grad_gate", "detach_gate")}
    assert gates == (
        {"grad_gate": "additive", "detach_gate": False}
        if synapse
        else {"grad_gate": "subtractive", "detach_gate": True}
    )
    text = load_config(recipe, ["preset=paper_text"])
    assert (text.optim.name, text.optim.lr, text.optim.momentum, text.optim.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert text.schedule.name == "constant" and text.model.kwargs["grad_gate"] == "paper"
    assert text.loss.terms[0].kwargs == {"ce_weight": 0.7, "dice_weight": 0.3}
    tu = load_config(recipe, ["preset=transunet"])
    assert (tu.optim.name, tu.optim.lr, tu.schedule.name) == ("sgd", 0.01, "poly")
    # every preset's loss terms match the outputs of the model it builds (tiny input)
    x, y = torch.randn(1, 1, 32, 32), torch.randint(0, cfg.data.num_classes, (1, 32, 32))
    presets = [
        "paper_text",
        "transunet",
        "val",
        "weighted",
        "no_sideconv",
        "no_rfb_sideconv",
        "paper_loss_weights",
    ]
    for preset in presets + ([] if synapse else ["aggregated", "addra_gates"]):
        c = load_config(recipe, [f"preset={preset}"])
        torch.manual_seed(0)
        m = build_model(c.model.name, c.data.in_channels, c.data.out_channels, **c.model.kwargs, **TINY)
        total, _ = Criterion.from_config(c.loss)(m(x), y)
        assert torch.isfinite(total)


def test_recipes_show_mgrad_synapse_has_no_carve_out_and_adamw():
    import yaml
    from typer.testing import CliRunner

    from medseg.cli import app

    res = CliRunner().invoke(app, ["recipes", "show", "mgrad_unet_synapse"])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown["data"]["val_split"] is None
    assert (shown["optim"]["name"], shown["optim"]["lr"], shown["schedule"]["name"]) == ("adamw", 1e-4, "constant")
