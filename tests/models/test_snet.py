"""SNet (Stagger Network): size against the paper, shapes at odd sizes, ablations, GAB/FEB equations, recipes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.config import load_config
from medseg.layers.transformer import map_to_tokens, tokens_to_map
from medseg.losses._registry import build_loss
from medseg.models import build_model, count_parameters, get_entry
from medseg.models.snet import (
    FeatureEnhancementBlock,
    FeatureFusionBlock,
    GlobalAttentionBlock,
    ResizeConcat,
    SNet,
    summed_self_attention,
)

PAPER_PARAMS = 38.7e6  # Table 4
OUR_PARAMS = 38_682_075  # default snet, in_channels=1, out_channels=9 (Synapse)

# A narrow SNet with the default topology (ViT widths 1/4 of the paired CNN levels) for fast tests.
SMALL = dict(
    cnn_channels=(8, 16, 32, 64, 128),
    vit_dims=(8, 16, 32, 64),
    vit_heads=(1, 1, 2, 2),
    feb_heads=1,
    gab_heads=2,
)


@pytest.fixture(scope="module")
def default_model() -> SNet:
    torch.manual_seed(0)
    return build_model("snet", in_channels=1, out_channels=9)


def _finite_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_registry_entry() -> None:
    entry = get_entry("snet")
    assert entry.default_size == (224, 224) and entry.stride == 32
    assert "2403.19177" in entry.paper


def test_parameter_count_matches_paper(default_model: SNet) -> None:
    n = count_parameters(default_model)
    assert n == OUR_PARAMS
    assert abs(n / PAPER_PARAMS - 1) < 0.03  # -0.05 %


def test_forward_backward_224(default_model: SNet) -> None:
    default_model.train()
    default_model.zero_grad()
    out = default_model(torch.randn(1, 1, 224, 224))
    assert out.logits.shape == (1, 9, 224, 224)
    assert set(out.aux) == {"fused"} and out.aux["fused"].shape == (1, 9, 224, 224)
    (out.logits.mean() + out.aux["fused"].mean()).backward()
    _finite_grads(default_model)


def test_forward_backward_odd_size(default_model: SNet) -> None:
    default_model.zero_grad()
    out = default_model(torch.randn(1, 1, 96, 160))
    assert out.logits.shape == (1, 9, 96, 160) and out.aux["fused"].shape == (1, 9, 96, 160)
    out.logits.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in default_model.parameters() if p.grad is not None)


def test_size_error(default_model: SNet) -> None:
    with pytest.raises(ValueError, match="nearest valid size is 96x224"):
        default_model(torch.randn(1, 1, 100, 224))


@pytest.mark.parametrize("fusion", ["stagger", "unstagger"])
def test_training_steps_reduce_loss(fusion: str) -> None:
    torch.manual_seed(0)
    model = SNet(1, 3, fusion=fusion, **SMALL)
    x = torch.randn(2, 1, 64, 96)
    y = (x[:, 0] > 0.5).long() + (x[:, 0] > 1.2).long()  # learnable 3-class target
    loss_fn = build_loss("dice_ce", ce_weight=0.6, dice_weight=0.4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(4):
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out.logits, y) + loss_fn(out.aux["fused"], y)
        loss.backward()
        if step == 0:
            _finite_grads(model)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_unstagger_pairs_same_level() -> None:
    stagger, unstagger = SNet(1, 2, **SMALL), SNet(1, 2, fusion="unstagger", **SMALL)
    assert stagger.fused_levels == (2, 3) and unstagger.fused_levels == (0, 1)
    # stagger: ViT d fused with CNN 4d; unstagger: ViT d with the CNN level of the same width d
    assert [f.fuse[0].in_channels for f in stagger.ffb] == [16 + 32, 32 + 64]
    assert [f.fuse[0].in_channels for f in unstagger.ffb] == [16 + 8, 32 + 16]
    # the decoder's skip at level 0 is the 2d = 16-channel F_fuse (+ 8 upsampled channels)
    assert unstagger.decoder[3].conv[0].in_channels == 16 + 8
    assert stagger.decoder[3].conv[0].in_channels == 8 + 8
    with pytest.raises(ValueError, match="fusion"):
        SNet(1, 2, fusion="diagonal", **SMALL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "switches",
    [dict(feb=False), dict(ffb=False), dict(gab=False), dict(feb=False, ffb=False, gab=False)],
)
def test_ablations_build_and_run(switches: dict[str, bool]) -> None:
    torch.manual_seed(0)
    model = SNet(1, 4, **SMALL, **switches)
    if not switches.get("feb", True):
        assert model.feb is None
    if not switches.get("ffb", True):
        assert all(isinstance(f, ResizeConcat) for f in model.ffb)
    if not switches.get("gab", True):
        assert isinstance(model.gab, ResizeConcat)
    out = model(torch.randn(2, 1, 64, 96))
    assert out.logits.shape == (2, 4, 64, 96) and out.aux["fused"].shape == (2, 4, 64, 96)
    (out.logits.mean() + out.aux["fused"].mean()).backward()
    _finite_grads(model)


def test_binary_rgb_and_eval_mode() -> None:
    model = SNet(3, 1, **SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 64))
    assert out.logits.shape == (1, 1, 96, 64) and set(out.aux) == {"fused"}


def test_gab_equations_against_einsum() -> None:
    torch.manual_seed(0)
    b, n, d = 2, 5, 4
    x1, x2 = torch.randn(b, n, d), torch.randn(b, n, d)
    # Eq. 7 with Q = K = V = X (no projection), single head, scale 1/sqrt(d)
    a1 = torch.softmax(torch.einsum("bnd,bmd->bnm", x1, x1) / math.sqrt(d), dim=-1)
    a2 = torch.softmax(torch.einsum("bnd,bmd->bnm", x2, x2) / math.sqrt(d), dim=-1)
    f_sum = summed_self_attention(x1, x2)
    assert torch.allclose(f_sum, a1 + a2, atol=1e-6)
    assert torch.allclose(f_sum.sum(-1), torch.full((b, n), 2.0), atol=1e-5)
    f1, f2 = GlobalAttentionBlock.swap_values(x1, x2)
    assert torch.allclose(f1, torch.einsum("bnm,bmd->bnd", a1 + a2, x1) + x2, atol=1e-5)  # Eq. 8
    assert torch.allclose(f2, torch.einsum("bnm,bmd->bnd", a1 + a2, x2) + x1, atol=1e-5)  # Eq. 9


def test_gab_block_end_to_end() -> None:
    torch.manual_seed(1)
    gab = GlobalAttentionBlock(dim=4, in2_channels=6, num_heads=2).eval()
    f3, f4 = torch.randn(1, 4, 2, 4), torch.randn(1, 6, 1, 2)  # stage 4 on half stage 3's grid
    out = gab(f3, f4)
    assert out.shape == f3.shape
    # stage 4: 1x1 projection -> bilinear to stage 3's grid -> LayerNorm
    x1 = f3.flatten(2).transpose(1, 2)
    up = F.interpolate(gab.proj2(f4), size=(2, 4), mode="bilinear", align_corners=False)
    x2 = gab.norm2(up.flatten(2).transpose(1, 2))
    a = torch.softmax(x1 @ x1.transpose(1, 2) / 2.0, -1) + torch.softmax(x2 @ x2.transpose(1, 2) / 2.0, -1)
    f1, f2 = a @ x1 + x2, a @ x2 + x1
    # Eq. 10: Q = F1 W_q, K = F2 W_k, V = F2 W_v, 2 heads of width 2, then W_o
    q = gab.cross.q(f1).reshape(1, 8, 2, 2)
    k = gab.cross.k(f2).reshape(1, 8, 2, 2)
    v = gab.cross.v(f2).reshape(1, 8, 2, 2)
    att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(2), dim=-1)
    ref = gab.cross.proj(torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(1, 8, 4))
    assert torch.allclose(out, tokens_to_map(ref, (2, 4)), atol=1e-5)


def test_feb_splits_tokens_back() -> None:
    torch.manual_seed(0)
    feb = FeatureEnhancementBlock((4, 8), num_heads=1).eval()
    f1, f2 = torch.randn(2, 4, 6, 10), torch.randn(2, 8, 3, 5)  # N1 = 60, N2 = 15 tokens
    g1, g2 = feb(f1, f2)
    assert g1.shape == f1.shape and g2.shape == f2.shape
    # The attention mixes the two stages: stage-1 output depends on stage-2 input.
    f2_req = f2.clone().requires_grad_(True)
    feb(f1, f2_req)[0].sum().backward()
    assert f2_req.grad.abs().sum() > 0
    # With the attention replaced by the identity and the depth-wise convs zeroed, each output must be
    # its own input's tokens (projected, normed, projected back) in the original order: the split is right.
    feb.attn = torch.nn.Identity()  # type: ignore[assignment]
    for conv in feb.dwconv:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    g1, g2 = feb(f1, f2)
    t1, _ = map_to_tokens(f1)
    t2, _ = map_to_tokens(f2)
    e1 = f1 + tokens_to_map(feb.proj_out[0](feb.norm(feb.proj_in[0](t1))), (6, 10))
    e2 = f2 + tokens_to_map(feb.proj_out[1](feb.norm(feb.proj_in[1](t2))), (3, 5))
    assert torch.allclose(g1, e1, atol=1e-5) and torch.allclose(g2, e2, atol=1e-5)


def test_ffb_shapes_and_resize() -> None:
    ffb = FeatureFusionBlock(cnn_channels=16, vit_channels=4)
    assert ffb.out_channels == 8  # 2d
    out = ffb(torch.randn(2, 16, 8, 12), torch.randn(2, 4, 4, 6))  # ViT map resized to the CNN grid
    assert out.shape == (2, 8, 8, 12)
    assert ffb.mix[0][0].groups == 20  # depth-wise over the 5d concatenation
    assert ffb.fuse[0].in_channels == 8 + 16  # [F2, F_C]


@pytest.mark.parametrize(
    ("recipe", "classes", "epochs"),
    [("snet_synapse", 9, 300), ("snet_acdc", 4, 150), ("snet_monuseg", 1, 300)],
)
def test_recipes_validate(recipe: str, classes: int, epochs: int) -> None:
    cfg = load_config(recipe)
    assert cfg.model.name == "snet"
    assert cfg.data.out_channels == classes and cfg.data.size == (224, 224) and cfg.data.batch_size == 12
    assert cfg.trainer.max_epochs == epochs
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert cfg.schedule.name == "poly"
    assert [(t.loss, t.output, t.kwargs) for t in cfg.loss.terms] == [
        ("dice_ce", "logits", {"ce_weight": 0.6, "dice_weight": 0.4}),
        ("dice_ce", "aux/fused", {"ce_weight": 0.6, "dice_weight": 0.4}),
    ]
    assert "no learning rate" in cfg.description.lower()
    # Synapse/ACDC: TransUNet's protocol (all training cases, last epoch); a validation split on request
    assert cfg.data.val_split == (None if recipe != "snet_monuseg" else "val")
    assert load_config(recipe, ["preset=val"]).data.val_split == "val"
    ablation = load_config(recipe, ["preset=unstagger"])
    assert ablation.model.kwargs["fusion"] == "unstagger"
