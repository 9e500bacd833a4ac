"""Shared transformer blocks: shapes at odd sizes and attention against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.layers.transformer import (
    CrossAttention,
    EfficientSelfAttention,
    MixFFN,
    OverlapPatchEmbed,
    TransformerBlock,
    TransformerStage,
    drop_path_rates,
    map_to_tokens,
    tokens_to_map,
)


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_h)) V per head, written with einsum; [B, N, C] in and out."""
    b, nq, c = q.shape
    d = c // heads
    qh = q.reshape(b, nq, heads, d)
    kh = k.reshape(b, k.shape[1], heads, d)
    vh = v.reshape(b, v.shape[1], heads, d)
    attn = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", qh, kh) / math.sqrt(d), dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", attn, vh).reshape(b, nq, c)


def test_tokens_round_trip_and_error() -> None:
    x = torch.randn(2, 5, 3, 7)
    t, hw = map_to_tokens(x)
    assert t.shape == (2, 21, 5) and hw == (3, 7)
    assert torch.equal(t[0, 7 + 2], x[0, :, 1, 2])  # row-major token order
    assert torch.equal(tokens_to_map(t, hw), x)
    with pytest.raises(ValueError, match="do not fill"):
        tokens_to_map(t, (4, 7))


@pytest.mark.parametrize(
    ("size", "patch", "stride", "expected"),
    [
        ((97, 61), 7, 4, (25, 16)),
        ((96, 160), 7, 4, (24, 40)),
        ((25, 16), 3, 2, (13, 8)),
        ((7, 5), 3, 2, (4, 3)),
    ],
)
def test_overlap_patch_embed_sizes(
    size: tuple[int, int], patch: int, stride: int, expected: tuple[int, int]
) -> None:
    pe = OverlapPatchEmbed(3, 16, patch_size=patch, stride=stride)
    tokens, hw = pe(torch.randn(2, 3, *size))
    assert hw == expected  # ceil(H / stride) x ceil(W / stride)
    assert tokens.shape == (2, expected[0] * expected[1], 16)
    # LayerNorm over channels: every token has zero mean
    assert torch.allclose(tokens.mean(-1), torch.zeros(()), atol=1e-5)


def test_patch_embed_rejects_gaps() -> None:
    with pytest.raises(ValueError, match="skip pixels"):
        OverlapPatchEmbed(3, 8, patch_size=1, stride=2)


def test_efficient_attention_with_spatial_reduction_matches_reference() -> None:
    torch.manual_seed(0)
    dim, heads, sr, hw = 8, 2, 2, (6, 10)
    attn = EfficientSelfAttention(dim, heads, sr_ratio=sr).eval()
    x = torch.randn(2, hw[0] * hw[1], dim)
    out = attn(x, hw)
    assert out.shape == x.shape
    # keys/values come from the grid reduced 2x by a strided conv + LayerNorm: 3 x 5 = 15 tokens
    reduced, _ = map_to_tokens(attn.sr(tokens_to_map(x, hw)))
    assert reduced.shape[1] == 15
    reduced = attn.norm(reduced)
    k, v = attn.kv(reduced).chunk(2, dim=-1)
    ref = attn.proj(_reference_attention(attn.q(x), k, v, heads))
    assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="hw"):
        attn(x)


def test_plain_self_attention_matches_reference() -> None:
    torch.manual_seed(1)
    attn = EfficientSelfAttention(12, 3).eval()
    x = torch.randn(1, 9, 12)
    k, v = attn.kv(x).chunk(2, dim=-1)
    assert torch.allclose(attn(x), attn.proj(_reference_attention(attn.q(x), k, v, 3)), atol=1e-5)


def test_cross_attention_matches_reference() -> None:
    torch.manual_seed(2)
    ca = CrossAttention(8, 2, kv_dim=6).eval()
    x, y = torch.randn(2, 5, 8), torch.randn(2, 11, 6)
    out = ca(x, y)
    assert out.shape == (2, 5, 8)
    ref = ca.proj(_reference_attention(ca.q(x), ca.k(y), ca.v(y), 2))
    assert torch.allclose(out, ref, atol=1e-5)
    # without output projection, one head: exactly softmax(Q K^T / sqrt(d)) V
    ca1 = CrossAttention(4, 1, out_proj=False).eval()
    x1, y1 = torch.randn(1, 3, 4), torch.randn(1, 7, 4)
    q, k, v = ca1.q(x1), ca1.k(y1), ca1.v(y1)
    expected = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v
    assert torch.allclose(ca1(x1, y1), expected, atol=1e-5)


def test_mix_ffn_and_plain_mlp() -> None:
    x = torch.randn(2, 12, 8)
    mix = MixFFN(8, 32)
    assert mix(x, (3, 4)).shape == x.shape
    with pytest.raises(ValueError, match="hw"):
        mix(x)
    plain = MixFFN(8, 32, dwconv=False)
    assert plain(x).shape == x.shape
    assert not any(isinstance(m, torch.nn.Conv2d) for m in plain.modules())


def test_block_and_stage_shapes_at_odd_size() -> None:
    torch.manual_seed(3)
    blk = TransformerBlock(16, 2, mlp_ratio=2, sr_ratio=2, drop_path=0.5).eval()
    x = torch.randn(2, 6 * 10, 16)
    y = blk(x, (6, 10))
    assert y.shape == x.shape
    assert torch.equal(y, blk(x, (6, 10)))  # DropPath is the identity in eval
    stage = TransformerStage(3, 16, depth=2, num_heads=2, patch_size=7, stride=4, sr_ratio=2)
    out = stage(torch.randn(1, 3, 97, 61))
    assert out.shape == (1, 16, 25, 16)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stage.parameters())


def test_drop_path_rates() -> None:
    rates = drop_path_rates([1, 2, 1], 0.3)
    assert [len(r) for r in rates] == [1, 2, 1]
    assert rates[0][0] == 0.0 and math.isclose(rates[2][0], 0.3, rel_tol=1e-6)
    assert drop_path_rates([0, 0], 0.1) == [[], []]


def test_sdpa_reference_helper_agrees_with_torch() -> None:
    q, k, v = torch.randn(1, 4, 6), torch.randn(1, 5, 6), torch.randn(1, 5, 6)
    ref = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    assert torch.allclose(_reference_attention(q, k, v, 1), ref, atol=1e-5)
