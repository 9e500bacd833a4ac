"""Shared transformer blocks: overlapping patch embedding, efficient (spatial-reduction) attention,
Mix-FFN, a pre-norm transformer block, a hierarchical stage and plain multi-head cross-attention.

Tokens are ``[B, N, C]`` with ``N = H * W`` in row-major order; every block that needs the grid
takes ``hw = (H, W)``. The design follows PVT-v2 (Wang et al., "PVT v2: Improved Baselines with
Pyramid Vision Transformer", CVMJ 2022; ``timm/models/pvt_v2.py``) and SegFormer (Xie et al.,
NeurIPS 2021): a strided-conv patch embedding with LayerNorm, attention whose keys/values are
spatially reduced by a strided conv (ratio ``sr_ratio``), and an MLP with a 3x3 depth-wise conv
between its two linears (Mix-FFN). The depth-wise conv carries the position information, so no
position embedding is needed and any input size works.

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
kernels on GPU). ``DropPath``, ``Mlp`` and ``trunc_normal_`` come from ``timm.layers``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

__all__ = [
    "CrossAttention",
    "EfficientSelfAttention",
    "MixFFN",
    "OverlapPatchEmbed",
    "TransformerBlock",
    "TransformerStage",
    "drop_path_rates",
    "init_transformer_weights",
    "map_to_tokens",
    "tokens_to_map",
]


def map_to_tokens(x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """``[B, C, H, W]`` -> (``[B, H*W, C]``, (H, W))."""
    h, w = x.shape[-2:]
    return x.flatten(2).transpose(1, 2), (h, w)


def tokens_to_map(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """``[B, H*W, C]`` -> ``[B, C, H, W]``."""
    b, n, c = x.shape
    h, w = hw
    if n != h * w:
        raise ValueError(f"{n} tokens do not fill a {h}x{w} grid")
    return x.transpose(1, 2).reshape(b, c, h, w)


def init_transformer_weights(m: nn.Module) -> None:
    """PVT-v2 / SegFormer initialisation: trunc-normal(0.02) linears, unit LayerNorm, fan-out normal convs."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding (PVT-v2): ``Conv2d(k, stride, padding=k//2)`` then LayerNorm.

    The output grid is ``ceil(H / stride) x ceil(W / stride)`` for any H, W (k odd, k >= stride).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 7, stride: int = 4) -> None:
        super().__init__()
        if patch_size < stride:
            raise ValueError(f"patch_size {patch_size} < stride {stride} would skip pixels")
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        tokens, hw = map_to_tokens(self.proj(x))
        return self.norm(tokens), hw


class _MultiHead(nn.Module):
    """Scaled dot-product attention of already projected ``[B, N, C]`` q, k, v over ``num_heads`` heads."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``softmax(Q K^T / sqrt(d_h)) V`` per head; returns ``[B, Nq, C]``."""

        def split(t: Tensor) -> Tensor:
            b, n, c = t.shape
            return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # [B, h, N, C/h]

        out = F.scaled_dot_product_attention(
            split(q), split(k), split(v), dropout_p=self.attn_drop if self.training else 0.0
        )
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


class EfficientSelfAttention(_MultiHead):
    """Multi-head self-attention with spatial reduction (PVT's SRA, SegFormer's efficient attention).

    Keys and values come from the token grid reduced by ``Conv2d(dim, dim, sr_ratio, stride=sr_ratio)``
    + LayerNorm, so the cost is ``N * N / sr_ratio**2``; ``sr_ratio=1`` is plain MHSA (no ``hw`` needed).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        *,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop)
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        kv_in = x
        if self.sr_ratio > 1:
            if hw is None:
                raise ValueError("spatial reduction needs the token grid hw=(H, W)")
            kv_in, _ = map_to_tokens(self.sr(tokens_to_map(x, hw)))
            kv_in = self.norm(kv_in)
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        return self.proj_drop(self.proj(self.attend(self.q(x), k, v)))


class CrossAttention(_MultiHead):
    """Plain multi-head cross-attention ``softmax(Q K^T / sqrt(d_h)) V`` with ``Q = x W_q``, ``K = y W_k``,
    ``V = y W_v`` and (optionally) an output projection ``W_o``.

    ``x``: ``[B, Nq, dim]`` queries; ``y``: ``[B, Nk, kv_dim]`` keys/values (``kv_dim`` defaults to ``dim``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        *,
        kv_dim: int | None = None,
        qkv_bias: bool = True,
        out_proj: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop)
        kv_dim = dim if kv_dim is None else kv_dim
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.v = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.proj_drop(self.proj(self.attend(self.q(x), self.k(y), self.v(y))))


class MixFFN(nn.Module):
    """``fc1 -> [3x3 depth-wise conv] -> GELU -> fc2`` (Mix-FFN, PVT-v2's ``MlpWithDepthwiseConv``).

    ``dwconv=False`` is the plain ViT MLP (``timm.layers.Mlp``).
    """

    def __init__(self, dim: int, hidden_dim: int, *, dwconv: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        self.use_dwconv = dwconv
        if dwconv:
            self.fc1 = nn.Linear(dim, hidden_dim)
            self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden_dim, dim)
            self.drop = nn.Dropout(drop)
        else:
            self.mlp = Mlp(dim, hidden_dim, dim, act_layer=nn.GELU, drop=drop)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        if not self.use_dwconv:
            return self.mlp(x)
        if hw is None:
            raise ValueError("the depth-wise conv needs the token grid hw=(H, W)")
        x = self.fc1(x)
        x, _ = map_to_tokens(self.dwconv(tokens_to_map(x, hw)))
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(FFN(LN(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        *,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(
            dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), dwconv=dwconv, drop=drop)
        self.apply(init_transformer_weights)

    def forward(self, x: Tensor, hw: tuple[int, int] | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class TransformerStage(nn.Module):
    """One hierarchical (PVT-v2) stage: overlapping patch embedding, ``depth`` blocks, LayerNorm.

    Maps ``[B, in_channels, H, W]`` to ``[B, dim, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        *,
        depth: int = 2,
        num_heads: int = 1,
        patch_size: int = 3,
        stride: int = 2,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | list[float] = 0.0,
        dwconv: bool = True,
    ) -> None:
        super().__init__()
        dpr = drop_path if isinstance(drop_path, list) else [drop_path] * depth
        if len(dpr) != depth:
            raise ValueError(f"{len(dpr)} drop-path rates for {depth} blocks")
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size=patch_size, stride=stride)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                sr_ratio=sr_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=dpr[i],
                dwconv=dwconv,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.norm.apply(init_transformer_weights)

    def forward(self, x: Tensor) -> Tensor:
        tokens, hw = self.patch_embed(x)
        for blk in self.blocks:
            tokens = blk(tokens, hw)
        return tokens_to_map(self.norm(tokens), hw)


def drop_path_rates(depths: list[int] | tuple[int, ...], drop_path_rate: float) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over all blocks, split by stage."""
    n = sum(depths)
    rates = [drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out
