"""MDA-U-Net (ω-Net): paper-size forward/backward, parameter count, switches, and the blocks
(DSPA, CA, Cascade MSC) against direct computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medseg.models import build_model, count_parameters, get_entry
from medseg.models.mda_unet import (
    MDSA,
    CascadeMSC,
    ChannelAttention,
    DensePositionAttention,
    MDAUNet,
    PaperChannelAttention,
)

# Our recorded count (docs/models/mda_unet.md), not the paper's: the paper reports no parameter count.
RECORDED_PARAMS = 60_119_410  # in_channels=1, out_channels=3 (background, organ, tumour), defaults
SMALL = (4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def paper_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("mda_unet", in_channels=1, out_channels=3)


def _fwd_bwd(model: nn.Module, x: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.logits.shape == (x.shape[0], 3, *x.shape[-2:])
    assert set(out.aux) == {"additional"}
    assert out.aux["additional"].shape == out.logits.shape  # Eq. 6 head at input size
    (out.logits.square().mean() + 0.1 * out.aux["additional"].square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_registry_entry_and_param_count(paper_model: nn.Module) -> None:
    entry = get_entry("mda_unet")
    assert entry.default_size == (512, 512) and entry.stride == 16
    assert "2012.03674" in entry.paper
    assert paper_model.stride == 16
    assert count_parameters(paper_model) == RECORDED_PARAMS


def test_forward_512(paper_model: nn.Module) -> None:
    """The paper's 512 x 512 CT slice, batch 1 (bottleneck 1024 x 32 x 32): shapes at the paper's size (the
    backward pass is checked at a narrow width below; at full width it took 25 s of the suite)."""
    with torch.no_grad():
        out = paper_model.eval()(torch.randn(1, 1, 512, 512))
    assert out.logits.shape == out.aux["additional"].shape == (1, 3, 512, 512)
    assert torch.isfinite(out.logits).all()


def test_forward_backward_odd_size() -> None:
    """96 x 160 (6 x 10 at the bottleneck) catches misaligned skips; narrow widths keep it fast."""
    torch.manual_seed(0)
    _fwd_bwd(MDAUNet(1, 3, channels=(16, 32, 64, 128, 256)), torch.randn(2, 1, 96, 160))


def test_size_error() -> None:
    model = MDAUNet(1, 3, channels=SMALL)
    with pytest.raises(ValueError, match="nearest valid size is 96x160"):
        model(torch.randn(1, 1, 100, 161))


# --- switches -------------------------------------------------------------------------------------


def _double_conv_params(cin: int, cout: int) -> int:
    return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout  # bias-free convs + BN


def _plain_unet_params(cin: int, cout: int, ch: tuple[int, ...]) -> int:
    n = sum(_double_conv_params(a, b) for a, b in zip((cin,) + ch[:-1], ch, strict=True))
    for lo, hi in zip(ch[:-1], ch[1:], strict=True):
        n += 4 * hi * lo + lo  # 2x2 transposed conv with bias
        n += _double_conv_params(2 * lo, lo)
    return n + ch[0] * cout + cout


def _msc_params(c: int) -> int:
    return 39 * c * c + 8 * c  # (25 + 9 + 1 + 4) C^2 weights + 4 BN


def _dspa_params(c: int, k: int) -> int:
    return 9 * c * k + k


def test_plain_unet_when_additional_path_off() -> None:
    model = MDAUNet(1, 3, channels=SMALL, additional_path=False, cascade_msc=False)
    assert count_parameters(model) == _plain_unet_params(1, 3, SMALL)
    full = MDAUNet(1, 3, additional_path=False, cascade_msc=False)
    assert count_parameters(full) == _plain_unet_params(1, 3, (64, 128, 256, 512, 1024)) == 31_036_611
    assert not any(isinstance(m, (MDSA, CascadeMSC)) for m in model.modules())
    keys = model.state_dict().keys()
    assert not any(k.startswith(("add_up", "add_dec", "aux_head", "attention")) for k in keys)
    out = model(torch.randn(1, 1, 32, 48))
    assert out.aux == {} and out.logits.shape == (1, 3, 32, 48)


def test_switch_parameter_deltas() -> None:
    ch, k = SMALL, 10
    dec = ch[:-1]
    base = count_parameters(MDAUNet(1, 3, channels=ch))
    plain = _plain_unet_params(1, 3, ch)
    msc = sum(_msc_params(c) for c in dec)
    dspa = sum(_dspa_params(2 * c, k) for c in dec)
    ca = len(dec)  # one γ per link
    additional = sum(
        4 * hi * lo + lo + _double_conv_params(2 * lo, lo) for lo, hi in zip(ch[:-1], ch[1:], strict=True)
    )
    wider_dec = sum(9 * lo * lo for lo in dec)  # original path's first conv also reads ua_j
    assert base == plain + msc + additional + wider_dec + ch[0] * 3 + 3 + dspa + ca

    def n(**kw: object) -> int:
        return count_parameters(MDAUNet(1, 3, channels=ch, **kw))  # type: ignore[arg-type]

    assert base - n(cascade_msc=False) == msc
    assert base - n(mdsa=False) == dspa + ca
    assert base - n(position_attention=False) == dspa
    assert base - n(channel_attention=False) == ca
    assert n(channel_attention="none") == n(channel_attention=False)
    assert base - n(channel_attention="paper") == ca  # the printed Eq. 12-13 has no γ
    assert n(mdsa=False) == n(position_attention=False, channel_attention=False)
    assert base - n(K=4) == dspa - sum(_dspa_params(2 * c, 4) for c in dec)
    assert base - n(additional_path=False) == additional + wider_dec + ch[0] * 3 + 3 + dspa + ca


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"cascade_msc": False},
        {"mdsa": False},
        {"position_attention": False},
        {"channel_attention": False},
        {"K": 3},
        {"additional_path": False},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_switch_forward_backward(kw: dict) -> None:
    torch.manual_seed(0)
    model = MDAUNet(2, 3, channels=SMALL, **kw)
    out = model(torch.randn(2, 2, 32, 48))
    assert out.logits.shape == (2, 3, 32, 48)
    assert set(out.aux) == (set() if kw.get("additional_path") is False else {"additional"})
    loss = out.logits.mean() + sum(v.mean() for v in out.aux.values())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_channel_attention_switch_builds_and_checks() -> None:
    """build_model kwarg: "danet" (default) and "paper" give the right shapes; a bad value is one clear error."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    for kind, cls in (("danet", ChannelAttention), ("paper", PaperChannelAttention)):
        model = build_model("mda_unet", 1, 3, channels=SMALL, channel_attention=kind)
        assert all(isinstance(a.channel, cls) for a in model.attention)
        out = model(x)
        assert out.logits.shape == (1, 3, 32, 32) and out.aux["additional"].shape == (1, 3, 32, 32)
    assert isinstance(MDAUNet(1, 3, channels=SMALL).attention[0].channel, ChannelAttention)  # the default
    with pytest.raises(ValueError, match="channel_attention must be one of 'danet', 'paper', 'none'"):
        MDAUNet(1, 3, channels=SMALL, channel_attention="dan")


def test_narrow_three_levels() -> None:
    model = MDAUNet(1, 1, channels=(4, 8, 16))
    assert model.stride == 4
    assert model(torch.randn(1, 1, 12, 20)).logits.shape == (1, 1, 12, 20)


# --- Channel attention (Eq. 12-13, DANet) ----------------------------------------------------------


def test_ca_gamma_zero_is_identity() -> None:
    ca = ChannelAttention()
    assert ca.gamma.item() == 0.0
    x = torch.randn(2, 5, 3, 4)
    assert torch.equal(ca(x), x)


def test_ca_against_einsum() -> None:
    torch.manual_seed(1)
    ca = ChannelAttention()
    with torch.no_grad():
        ca.gamma.fill_(1.0)
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    m = x[0].reshape(3, 4)
    energy = torch.einsum("cn,dn->cd", m, m)
    attn = torch.softmax(energy.max(dim=1, keepdim=True).values - energy, dim=1)
    expected = (torch.einsum("cd,dn->cn", attn, m) + m).reshape(1, 3, 2, 2)
    torch.testing.assert_close(ca(x.float()).double(), expected, rtol=1e-5, atol=1e-5)


def test_ca_hand_computed() -> None:
    """M' = [[1], [0]] (C=2, N=1): E = [[1, 0], [0, 0]], max - E = [[0, 1], [0, 0]]."""
    ca = ChannelAttention()
    with torch.no_grad():
        ca.gamma.fill_(1.0)
    out = ca(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)).flatten()
    e = math.e
    torch.testing.assert_close(out, torch.tensor([1 + 1 / (1 + e), 0.5]))


def test_paper_ca_hand_computed() -> None:
    """Printed Eq. 12-13, M' = [[1], [0]] (C=2, N=1): E = M'M'^T = [[1, 0], [0, 0]], A' = row softmax of E
    = [[e/(1+e), 1/(1+e)], [1/2, 1/2]], O' = A'M' + M' = [e/(1+e) + 1, 1/2] (no γ, no max trick)."""
    out = PaperChannelAttention()(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)).flatten()
    e = math.e
    torch.testing.assert_close(out, torch.tensor([1 + e / (1 + e), 0.5]))
    # C=2, N=2: M' = [[1, 0], [1, 1]] -> E = [[1, 1], [1, 2]]; row 0 softmax [1/2, 1/2], row 1 [1/(1+e), e/(1+e)]
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    a = torch.tensor([[0.5, 0.5], [1 / (1 + e), e / (1 + e)]])
    expected = torch.tensor([[0.5 * 1 + 0.5 * 1 + 1, 0.5 * 0 + 0.5 * 1 + 0],
                             [a[1, 0] * 1 + a[1, 1] * 1 + 1, a[1, 0] * 0 + a[1, 1] * 1 + 1]])
    torch.testing.assert_close(PaperChannelAttention()(m.view(1, 2, 1, 2)).view(2, 2), expected)
    assert not list(PaperChannelAttention().parameters())


# --- Dense spatial position attention (Eq. 9-11) ---------------------------------------------------


def test_dspa_shapes() -> None:
    dspa = DensePositionAttention(6, K=10)
    m = torch.randn(2, 6, 8, 12)
    assert dspa.dense_features(m).shape == (2, 6, 10)  # D: C x K
    assert dspa(m).shape == m.shape


def test_dspa_against_loops() -> None:
    """Eq. 10-11 element by element: a_{j,i} = softmax_i(D_i . M_j), O_j = sum_i a_{j,i} D_i + M_j."""
    torch.manual_seed(2)
    c, h, w, k = 3, 2, 3, 2
    dspa = DensePositionAttention(c, K=k)
    m = torch.randn(1, c, h, w)
    with torch.no_grad():
        s = dspa.dense(m)[0].reshape(k, h * w).double()  # K x N maps of the dilated conv
        mm = m[0].reshape(c, h * w).double()
        n = h * w
        d = torch.zeros(c, k, dtype=torch.float64)
        for i in range(k):  # dense feature i: softmax over positions of S_i pools M
            wts = torch.exp(s[i]) / torch.exp(s[i]).sum()
            d[:, i] = sum(wts[p] * mm[:, p] for p in range(n))
        out = torch.zeros(c, n, dtype=torch.float64)
        for j in range(n):
            logits = torch.stack([d[:, i] @ mm[:, j] for i in range(k)])
            a = torch.exp(logits) / torch.exp(logits).sum()
            out[:, j] = sum(a[i] * d[:, i] for i in range(k)) + mm[:, j]
        torch.testing.assert_close(dspa(m)[0].double(), out.reshape(c, h, w), rtol=1e-5, atol=1e-5)


def test_dspa_hand_computed() -> None:
    """S = 0 gives uniform pooling: D = mean_N(M) for every k, and then O = M + mean_N(M)."""
    dspa = DensePositionAttention(2, K=3)
    nn.init.zeros_(dspa.dense.weight)
    nn.init.zeros_(dspa.dense.bias)
    m = torch.tensor([[1.0, 3.0], [0.0, 4.0]]).view(1, 2, 1, 2)  # channel means 2 and 2
    torch.testing.assert_close(dspa(m), torch.tensor([[3.0, 5.0], [2.0, 6.0]]).view(1, 2, 1, 2))


def test_no_n_by_n_attention() -> None:
    """At 128 x 128 (N = 16384) no tensor kept for backward exceeds max(C, K) x N (N x N would be 2.7e8)."""
    c, k, n = 8, 10, 128 * 128
    block = MDSA(c, K=k)
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(torch.randn(1, c, 128, 128, requires_grad=True))
    out.sum().backward()
    assert sizes and max(sizes) <= max(c, k) * n  # the N x K attention map is the largest


def test_attention_under_autocast_keeps_float32_products() -> None:
    """Large activations: the C x C energy would overflow in half precision; we compute it in fp32."""
    block = MDSA(4, K=2)
    with torch.no_grad():
        block.channel.gamma.fill_(1.0)
    x = 50 * torch.rand(1, 4, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert out.dtype == x.dtype and torch.isfinite(out).all()


# --- Cascade MSC (Eq. 14) ---------------------------------------------------------------------------


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.factor * x


def test_cascade_msc_wiring() -> None:
    """X1 = C5(X), X2 = C3(X + X1), X3 = C1(X + X2), Y = C1(cat(X, X1, X2, X3))."""
    msc = CascadeMSC(3)
    msc.conv5, msc.conv3, msc.conv1, msc.fuse = _Scale(2), _Scale(3), _Scale(5), _Scale(1)
    x = torch.randn(1, 3, 4, 5)
    y = msc(x)
    torch.testing.assert_close(msc.conv3.seen, 3 * x)  # X + X1 = X + 2X
    torch.testing.assert_close(msc.conv1.seen, 10 * x)  # X + X2 = X + 9X
    torch.testing.assert_close(y, torch.cat([x, 2 * x, 9 * x, 50 * x], dim=1))


def test_cascade_msc_params_and_kernels() -> None:
    for c in (3, 64):
        msc = CascadeMSC(c)
        assert count_parameters(msc) == _msc_params(c)
    msc = CascadeMSC(4)
    kernels = [msc.conv5[0].kernel_size, msc.conv3[0].kernel_size, msc.conv1[0].kernel_size]
    assert kernels == [(5, 5), (3, 3), (1, 1)]
    assert (msc.fuse[0].in_channels, msc.fuse[0].out_channels) == (16, 4)
    assert msc(torch.randn(2, 4, 6, 10)).shape == (2, 4, 6, 10)


# --- Recipes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mda_unet_kits", "mda_unet_pancreas", "mda_unet_liver"])
def test_recipes_validate(name: str) -> None:
    from medseg.config import load_config
    from medseg.losses import Criterion

    cfg = load_config(name)
    assert cfg.model.name == "mda_unet"
    assert cfg.data.format == "nnunet_raw" and cfg.data.size == (512, 512)
    assert cfg.data.num_classes == 3 and cfg.data.out_channels == 3
    assert cfg.data.normalize.kind == "window" and cfg.data.skip_empty_slices
    assert cfg.optim.name == "adam" and cfg.optim.weight_decay == pytest.approx(1.5e-4)
    assert cfg.trainer.accumulate_grad_batches > 1
    weights = {t.output: t.weight for t in cfg.loss.terms}
    assert weights == {"logits": 1.0, "aux/additional": pytest.approx(0.1)}
    # The criterion runs on a narrow model's output (and on the `ce` preset, the paper's BCE analogue).
    model = MDAUNet(1, 3, channels=SMALL, **cfg.model.kwargs)
    out = model(torch.randn(2, 1, 32, 32))
    target = torch.randint(0, 3, (2, 32, 32))
    for c in (cfg, load_config(name, ["preset=ce"])):
        total, parts = Criterion.from_config(c.loss)(out, target)
        assert torch.isfinite(total) and len(parts) == 2


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_attention_keeps_the_input_layout_and_values(fmt: torch.memory_format) -> None:
    """The fast path hands channels_last maps in: same values as contiguous, same layout out, dtype kept."""
    torch.manual_seed(3)
    block = MDSA(6, K=3)
    with torch.no_grad():
        block.channel.gamma.fill_(0.5)
    x = torch.randn(2, 6, 5, 7)
    ref = block(x)
    out = block(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=fmt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x.bfloat16().contiguous(memory_format=fmt)).dtype == torch.bfloat16


def test_attention_gradients_match_across_layouts() -> None:
    """Training with channels_last (the cpu presets) back-propagates the same gradients as contiguous."""
    torch.manual_seed(4)
    block = MDSA(6, K=3)
    with torch.no_grad():
        block.channel.gamma.fill_(0.5)
    x = torch.randn(2, 6, 5, 7)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        block.zero_grad()
        xi = x.clone().contiguous(memory_format=fmt).requires_grad_(True)
        (block(xi) ** 2).sum().backward()
        grads.append((xi.grad, block.position.dense.weight.grad.clone(), block.channel.gamma.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
