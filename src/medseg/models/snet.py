"""SNet (Stagger Network).

Paper: T. Liu, Z. Tan, K. Huang, H. Jiang, "Rethinking Information Loss in Medical Image
Segmentation with Various-sized Targets" (SNet, Stagger Network), Neural Networks 2025,
arXiv 2403.19177 (``shared/papers/snet.txt``). Official code: none exists, so the text rules and
every choice it leaves open is ours (listed below; ``docs/models/snet.md`` has the same list, a
parameter/GMAC breakdown of both geometries and where GAB enters the decoder).

Architecture as built (default ``snet``: 38,885,659 parameters with ``in_channels=1, out_channels=9``
(Synapse), +0.48 % of Table 4's 38.7M; 75.7 GMACs at 224x224):

* **Geometry** (``vit_strides``). The paper's FEB has ``N_i = HW / 2^(2i)`` tokens at ViT layer i
  (Sec. 4.2), so ViT stages 1-4 sit at strides **2/4/8/16** (default, :data:`PAPER_STRIDES`). Our
  earlier strides 4/8/16/32 (PVT-v2's) stay as ``vit_strides=(4, 8, 16, 32)`` (:data:`LEGACY_STRIDES`):
  that model is unchanged, parameter for parameter (38,682,075).
* **Parallel Module** (Sec. 4.2). CNN branch: a U-Net encoder, levels 0-4 with 64/128/256/512/1024
  channels at strides 1/2/4/8/16, each ``(3x3 Conv-BN-ReLU) x 2``, ``MaxPool2d(2)`` between levels.
  ViT branch: 4 PVT-v2 stages (``layers/transformer.py``) at ``vit_strides``; width of each stage =
  **1/4 of the CNN level on the same grid** (32/64/128/256; legacy 64/128/256/512, the stride-32 stage
  doubling the one before), so every stagger pair has Sec. 4.3's d : 4d channels. Overlapping patch
  embedding with PVT-v2's kernel 2s - 1 (3x3 stride 2 for every paper stage; legacy 7x7 stride 4, then
  3x3 stride 2), efficient attention (sr 8/4/2/1), Mix-FFN, no position embedding (the Mix-FFN
  depth-wise conv carries position, so any multiple of the stride works).
* **FEB** (Fig. 4) on ViT stages 1 and 2: flatten, project stage 1 to stage 2's width, concatenate along
  the token axis (``N_1 + N_2 = HW/4 + HW/16`` tokens; legacy ``HW/16 + HW/64``), one pre-norm
  multi-head self-attention (2 heads, full attention), split back by token count, project back,
  residual, then a residual 3x3 depth-wise conv per stage.
* **Stagger Module / FFB** (Sec. 4.3, Fig. 5). ``fusion="stagger"``: ViT stage 1 with the CNN level on
  its grid, ViT stage 2 likewise -- CNN levels 1/2 (128 at stride 2, 256 at stride 4) with the paper's
  strides, so a *lower* ViT stage meets a *deeper* CNN level of the same resolution and nothing is
  resampled (legacy: levels 2/3, 256 at stride 4 and 512 at stride 8). ``F1 = [F_C, F_T]`` (5d) ->
  3x3 depth-wise conv -> 1x1 point-wise 5d->2d -> BN -> GELU = ``F2``; ``[F2, F_C]`` (6d) -> 3x3
  Conv-BN-GELU = ``F_fuse`` (2d = half the CNN level's width). ``F_fuse`` replaces the CNN skip
  connection of its level in the decoder.
* **Information Recovery Module** (Sec. 4.4). GAB (Fig. 6) on ViT stages 3 and 4: stage 4 -> 1x1 conv
  to stage 3's width -> bilinear to stage 3's grid (2x) -> LayerNorm; then with ``X1``, ``X2`` the two
  token sets (``Q = K = V = X``, no learned projection)::

      F_sum = softmax(X1 X1^T / sqrt(d)) + softmax(X2 X2^T / sqrt(d))      (Eq. 7, single head)
      F1    = F_sum X1 + X2                                                (Eq. 8)
      F2    = F_sum X2 + X1                                                (Eq. 9)
      F_out = softmax((F1 W_q)(F2 W_k)^T / sqrt(d_h)) (F2 W_v) W_o         (Eq. 10, 8 heads)

  ``F_out`` stays on stage 3's grid and is **concatenated into the decoder at that grid**: with the
  paper's strides at stride 8, next to CNN level 3's skip (decoder stage 8 takes 512 + 128 + 512
  channels); legacy at stride 16, next to the CNN bottleneck (1024 + 256). U-Net decoder: per level
  ``ConvTranspose2d(2, stride 2)`` to 512/256/128/64, concat the level's inputs (:func:`decoder_plan`),
  ``(3x3 Conv-BN-ReLU) x 2``; 1x1 head.
* **Outputs.** ``logits`` = decoder head at input size. ``aux["fused"]`` = the fused-feature
  prediction y_f of Sec. 5.1.3: a 1x1 head on each of the two FFB outputs, each upsampled
  (bilinear) to the input size, summed (one map, one deep-supervision term as in the paper's loss).
* **Loss** (recipes, not code): ``0.6 BCE + 0.4 Dice`` on ``logits`` and on ``aux/fused``; for K > 1
  classes CE replaces BCE (``dice_ce`` with ce_weight 0.6, dice_weight 0.4; Dice = TransUNet's).

Ablations (Tables 5-6) and comparison models, constructor arguments:

* ``fusion="unstagger"``: ViT stages 1/2 fuse with CNN levels 0/1 -- the *same index* (first / second
  stage of each branch, TransFuse-style), the ViT map resampled (bilinear) to the CNN grid: 2x with the
  paper's strides (64 ch at stride 1 with ViT 32 at stride 2; 128 at stride 2 with ViT 64 at stride 4);
  4x with the legacy ones. FFB output stays 2d; the stagger levels reach the decoder as plain skips.
  FEB/FFB/GAB unchanged (as the paper's comparison model).
* ``feb=False``: identity (stages 1/2 go to the fusion unchanged).
* ``ffb=False``: plain concatenation ``[F_C, resize(F_T)]`` (5d channels) as the skip.
* ``gab=False``: plain concatenation ``[stage 3, upsample(stage 4)]`` joins the decoder where GAB's
  output would (the paper does not say what replaces GAB).
* ``branches="cnn"``: the CNN branch alone feeds the same decoder (no ViT, FEB, FFB, GAB): the classic
  U-Net plus the two y_f heads, now on the CNN levels the fusion would use. ``branches="vit"``: the ViT
  branch (with FEB and GAB, switchable) alone feeds the same decoder, each CNN feature replaced by the
  ViT feature on its grid where one exists (FEB outputs where F_fuse was, stage 3/4 where CNN levels
  3/4 were; no skip above the first ViT stage's grid); y_f heads on the FEB outputs; ``fusion`` and
  ``ffb`` have no effect.

Choices the paper leaves open (ours; NOTES.md Sec. 7 item 11 plus the ones marked *):

1. CNN widths/depth: U-Net 64..1024 at strides 1..16 (NOTES). ViT strides 2/4/8/16 from
   ``N_i = HW/2^(2i)`` (NOTES, issue #14); * ViT width = 1/4 of the CNN level on the same grid, the
   ratio Sec. 4.3 states for the fused pair, applied to every stage.
2. * ViT depths 3/4/6/3 and heads 1/2/4/8 (head dim 32; PVT-v2-b2's depths), Mix-FFN ratios 8/8/4/8
   (PVT-v2's 8/8/4/4 with the last raised to 8): what fits the 38.7M budget next to a full U-Net
   (8/8/4/4 gives 37.3M, -3.7 %). sr 8/4/2/1. Patch kernels 2s - 1 (PVT-v2's overlap rule). Legacy: depths
   1/1/1/1, Mix-FFN 8/8/4/2 (:data:`VIT_DEFAULTS`).
3. Stagger pairs: the CNN level on each of ViT stages 1/2's grids (NOTES: lower ViT with higher CNN;
   * same grid, so no resampling). The paper chose its pairs by KL divergence; we fix them by grid.
4. * FFB's "DW-Conv ... -> 2d" is a depth-wise 3x3 + point-wise 1x1 (a depth-wise conv alone cannot
   change 5d to 2d); the second "Conv-BN-GELU" is a 3x3 conv; F_fuse replaces the CNN skip.
5. * FEB: common width = the wider stage (Linear projections in/out), 2 heads, full attention (no
   spatial reduction; with the paper's strides this is 15,680 tokens and 31.8 of the 75.7 GMACs at 224),
   pre-norm LayerNorm, residuals around the attention and the depth-wise conv.
6. GAB: stage 4 upsampled to stage 3's grid (NOTES); * 1x1 projection + LayerNorm so that Eq. 7-9 have
   equal widths; Eq. 7-9 single-head with d = stage 3's width; Eq. 10 with 8 heads, qkv bias and an
   output projection W_o (standard MHA); no residual around Eq. 10 (the paper's F_out is the result).
7. * GAB's output joins the decoder by concatenation on its own grid (stage 3's: stride 8 with the
   paper's strides, stride 16 legacy), never resampled; see docs/models/snet.md for why.
8. * Decoder: U-Net style transposed-conv upsampling (2x2, stride 2) + double conv, widths halving.
9. y_f: 1x1 head per FFB output, upsampled to the input (NOTES); * summed into one ``aux["fused"]``.
10. * Initialisation: PVT-v2 (trunc-normal 0.02) for transformer parts, PyTorch defaults for convs;
    no pretrained weights (as the paper). Drop path 0 by default (paper: no regularisation stated).
11. * Comparison models (``branches``): one branch into the same decoder, each feature of the removed
    branch replaced by the remaining branch's feature on the same grid (none where it has none); the
    y_f heads are kept so the recipes' loss (two deep-supervision terms) applies unchanged.
12. Training (recipes): SGD momentum 0.9, wd 1e-4, batch 12, 224, lr 0.01 + poly 0.9 (TransUNet's;
    the paper gives no learning rate), 300 epochs Synapse / 150 ACDC.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct
from medseg.layers.resize import check_input_size, resize_to
from medseg.layers.transformer import (
    CrossAttention,
    EfficientSelfAttention,
    TransformerStage,
    drop_path_rates,
    init_transformer_weights,
    map_to_tokens,
    tokens_to_map,
)
from medseg.models._output import SegOutput
from medseg.models._registry import register_model

Fusion = Literal["stagger", "unstagger"]
Branches = Literal["both", "cnn", "vit"]

#: ViT stage strides: the paper's N_i = HW / 2^(2i) tokens (Sec. 4.2) and our earlier PVT-v2 strides.
PAPER_STRIDES: tuple[int, ...] = (2, 4, 8, 16)
LEGACY_STRIDES: tuple[int, ...] = (4, 8, 16, 32)

#: ViT hyper-parameters per geometry when not given (``None``): depths, heads, Mix-FFN ratios, sr ratios.
#: Legacy: what fitted 38.7M with ViT widths 64/128/256/512 (the model before issue #14). Paper: widths
#: 32/64/128/256 free ~6.5 M parameters, spent on depth (PVT-v2-b2's depths 3/4/6/3) and PVT-v2's
#: Mix-FFN ratios 8/8/4/4 with the last raised to 8 (8/8/4/4 alone: 37.3M, -3.7 %).
VIT_DEFAULTS: dict[tuple[int, ...], dict[str, tuple[float, ...]]] = {
    PAPER_STRIDES: dict(
        depths=(3, 4, 6, 3), heads=(1, 2, 4, 8), mlp_ratios=(8, 8, 4, 8), sr_ratios=(8, 4, 2, 1)
    ),
    LEGACY_STRIDES: dict(
        depths=(1, 1, 1, 1), heads=(1, 2, 4, 8), mlp_ratios=(8, 8, 4, 2), sr_ratios=(8, 4, 2, 1)
    ),
}


def cnn_level(stride: int) -> int:
    """CNN level on a grid of ``stride`` (level l is at stride 2^l)."""
    return int(math.log2(stride))


def fusion_levels(fusion: str, vit_strides: tuple[int, ...]) -> tuple[int, int]:
    """CNN levels fused with ViT stages 1 and 2 (the FEB outputs).

    ``stagger``: the CNN level on each ViT stage's own grid -- levels 1/2 (strides 2/4) with the paper's
    strides, 2/3 (strides 4/8) with the legacy ones; either way a deeper CNN level than the ViT stage's
    index. ``unstagger``: the same index, CNN levels 0/1 (the first and second conv levels), the ViT map
    resampled to the CNN grid (2x with the paper's strides, 4x with the legacy ones).
    """
    if fusion == "stagger":
        return cnn_level(vit_strides[0]), cnn_level(vit_strides[1])
    if fusion == "unstagger":
        return 0, 1
    raise ValueError(f"fusion must be one of ['stagger', 'unstagger'], got {fusion!r}")


def default_vit_dims(cnn_channels: tuple[int, ...], vit_strides: tuple[int, ...]) -> tuple[int, ...]:
    """ViT width = 1/4 of the CNN level on the same grid (Sec. 4.3: ``F_T`` has d, ``F_C`` 4d channels);
    a stage beyond the deepest CNN level doubles the previous width."""
    dims: list[int] = []
    for s in vit_strides:
        level = cnn_level(s)
        dims.append(cnn_channels[level] // 4 if level < len(cnn_channels) else 2 * dims[-1])
    return tuple(dims)


# ----------------------------------------------------------------------------------------------
# Parallel Module: CNN branch
# ----------------------------------------------------------------------------------------------
def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """U-Net's ``(3x3 Conv-BN-ReLU) x 2``."""
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3), ConvNormAct(out_channels, out_channels, 3)
    )


class CNNBranch(nn.Module):
    """U-Net-like encoder: level 0 at stride 1, then ``MaxPool2d(2)`` + double conv per level (Sec. 4.2)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        levels = [double_conv(in_channels, channels[0])]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            levels.append(nn.Sequential(nn.MaxPool2d(2), double_conv(c_in, c_out)))
        self.levels = nn.ModuleList(levels)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


# ----------------------------------------------------------------------------------------------
# Parallel Module: Feature Enhancement Block (Sec. 4.2, Fig. 4)
# ----------------------------------------------------------------------------------------------
class FeatureEnhancementBlock(nn.Module):
    """FEB: tokens of two consecutive ViT stages concatenated along the token axis, one self-attention,
    split back to the two grids, then a 3x3 depth-wise conv on each (Fig. 4).

    The two stages have different widths, so each is projected (Linear) to the common width
    ``max(dims)`` before the attention and back after it. Residuals: ``F'_i = F_i + P_i(Attn(LN(.)))_i``
    and ``out_i = F'_i + DWConv_i(F'_i)``.
    """

    def __init__(self, dims: tuple[int, int], num_heads: int = 2, qkv_bias: bool = True) -> None:
        super().__init__()
        dim = max(dims)
        self.proj_in = nn.ModuleList(nn.Linear(d, dim) if d != dim else nn.Identity() for d in dims)
        self.norm = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio=1, qkv_bias=qkv_bias)
        self.proj_out = nn.ModuleList(nn.Linear(dim, d) if d != dim else nn.Identity() for d in dims)
        self.apply(init_transformer_weights)
        self.dwconv = nn.ModuleList(nn.Conv2d(d, d, 3, padding=1, groups=d) for d in dims)

    def forward(self, f1: Tensor, f2: Tensor) -> tuple[Tensor, Tensor]:
        t1, hw1 = map_to_tokens(f1)
        t2, hw2 = map_to_tokens(f2)
        n1 = t1.shape[1]
        tokens = torch.cat([self.proj_in[0](t1), self.proj_in[1](t2)], dim=1)  # [B, N_i + N_{i+1}, C]
        attended = self.attn(self.norm(tokens))
        a1, a2 = attended[:, :n1], attended[:, n1:]  # split back (token counts N_i, N_{i+1})
        g1 = f1 + tokens_to_map(self.proj_out[0](a1), hw1)
        g2 = f2 + tokens_to_map(self.proj_out[1](a2), hw2)
        return g1 + self.dwconv[0](g1), g2 + self.dwconv[1](g2)


# ----------------------------------------------------------------------------------------------
# Stagger Module: Feature Fusion Block (Sec. 4.3, Fig. 5)
# ----------------------------------------------------------------------------------------------
class FeatureFusionBlock(nn.Module):
    """FFB: ``F1 = [F_C, F_T]`` (5d) -> DW-Conv + point-wise -> BN -> GELU = ``F2`` (2d);
    ``[F2, F_C]`` (6d) -> 3x3 Conv-BN-GELU = ``F_fuse`` (2d). ``F_T`` is resized to ``F_C``'s grid first.

    ``d`` is the ViT width (``F_C`` has 4d channels in the stagger pairs); ``out_channels`` defaults to 2d.
    """

    def __init__(self, cnn_channels: int, vit_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = 2 * vit_channels if out_channels is None else out_channels
        cat = cnn_channels + vit_channels
        self.mix = nn.Sequential(
            ConvNormAct(cat, cat, 3, groups=cat, bias=False, norm=None, act=None),  # depth-wise 3x3
            ConvNormAct(cat, out_channels, 1, norm="bn", act="gelu"),  # point-wise 5d -> 2d, BN, GELU
        )
        self.fuse = ConvNormAct(out_channels + cnn_channels, out_channels, 3, norm="bn", act="gelu")
        self.out_channels = out_channels

    def forward(self, f_c: Tensor, f_t: Tensor) -> Tensor:
        f_t = resize_to(f_t, tuple(f_c.shape[-2:]))
        f2 = self.mix(torch.cat([f_c, f_t], dim=1))
        return self.fuse(torch.cat([f2, f_c], dim=1))


class ResizeConcat(nn.Module):
    """Plain channel concatenation ``[a, resize(b to a's grid)]``: what replaces a switched-off block
    (Table 6): FFB off -> ``[F_C, F_T]``; GAB off -> ``[stage 3, stage 4]``."""

    def __init__(self, channels_a: int, channels_b: int) -> None:
        super().__init__()
        self.out_channels = channels_a + channels_b

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, resize_to(b, tuple(a.shape[-2:]))], dim=1)


# ----------------------------------------------------------------------------------------------
# Information Recovery Module: Global Attention Block (Sec. 4.4, Fig. 6, Eq. 7-10)
# ----------------------------------------------------------------------------------------------
def summed_self_attention(x1: Tensor, x2: Tensor) -> Tensor:
    """Eq. 7: ``softmax(Q1 K1^T / sqrt(d)) + softmax(Q2 K2^T / sqrt(d))`` with ``Q = K = X`` (single head)."""
    scale = 1.0 / math.sqrt(x1.shape[-1])
    a1 = torch.softmax(x1 @ x1.transpose(-2, -1) * scale, dim=-1)
    a2 = torch.softmax(x2 @ x2.transpose(-2, -1) * scale, dim=-1)
    return a1 + a2


class GlobalAttentionBlock(nn.Module):
    """GAB on ViT stages 3 and 4.

    Stage 4 is projected to stage 3's width (1x1 conv), upsampled (bilinear) to stage 3's grid and
    LayerNorm-ed; then with ``X1`` = stage-3 tokens and ``X2`` = the aligned stage-4 tokens
    (``Q = K = V = X``, no projection, Eq. 7):
    ``F_sum = softmax(X1 X1^T / sqrt(d)) + softmax(X2 X2^T / sqrt(d))``,
    ``F1 = F_sum X1 + X2`` (Eq. 8), ``F2 = F_sum X2 + X1`` (Eq. 9),
    ``F_out = softmax(F1 W_q (F2 W_k)^T / sqrt(d_h)) F2 W_v`` (Eq. 10; ``num_heads`` heads + ``W_o``).
    Returns ``F_out`` as a map on stage 3's grid with stage 3's width.
    """

    def __init__(self, dim: int, in2_channels: int, num_heads: int = 8, qkv_bias: bool = True) -> None:
        super().__init__()
        self.proj2 = nn.Conv2d(in2_channels, dim, 1)
        self.norm2 = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.apply(init_transformer_weights)
        self.out_channels = dim

    def align(self, f3: Tensor, f4: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Tokens ``X1`` (stage 3) and ``X2`` (stage 4 projected + upsampled + LN) on stage 3's grid."""
        x1, hw = map_to_tokens(f3)
        x2, _ = map_to_tokens(resize_to(self.proj2(f4), tuple(f3.shape[-2:])))
        return x1, self.norm2(x2), hw

    @staticmethod
    def swap_values(x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 7-9: the summed attention map applied to each value, the other value added."""
        f_sum = summed_self_attention(x1, x2)
        return f_sum @ x1 + x2, f_sum @ x2 + x1

    def forward(self, f3: Tensor, f4: Tensor) -> Tensor:
        x1, x2, hw = self.align(f3, f4)
        f1, f2 = self.swap_values(x1, x2)
        return tokens_to_map(self.cross(f1, f2), hw)  # Eq. 10


# ----------------------------------------------------------------------------------------------
# Information Recovery Module: U-Net-like decoder
# ----------------------------------------------------------------------------------------------
class UpBlock(nn.Module):
    """``ConvTranspose2d(2, stride 2)`` to ``out_channels`` (half the level above), concat skip, double conv.

    ``skip_channels=0``: no skip at this level (ViT-only model above the first ViT stage's grid).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = double_conv(skip_channels + out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = self.up(x)
        if skip is None:
            return self.conv(x)
        x = resize_to(x, tuple(skip.shape[-2:]))
        return self.conv(torch.cat([skip, x], dim=1))


def decoder_plan(
    branches: str, fused_levels: tuple[int, int], vit_strides: tuple[int, ...], levels: int
) -> list[list[str]]:
    """Names of the features concatenated at each decoder level (level l at stride 2^l; the last is the
    bottleneck the decoder starts from).

    ``fuse0``/``fuse1`` are the Stagger Module's outputs (FFB; with one branch, that branch's feature at
    the same place), ``cnn<l>`` CNN levels, ``vit<i>`` ViT stages, ``gab`` the GAB output, which joins
    the decoder on its own grid (ViT stage 3's), so it is never resampled.
    """
    plan: list[list[str]] = [[] for _ in range(levels)]
    if branches == "vit":  # each CNN feature replaced by the ViT feature on its grid, where one exists
        for i, s in enumerate(vit_strides):
            level = cnn_level(s)
            if level < levels:
                plan[level].append(f"fuse{i}" if i < 2 else f"vit{i}")
    else:
        for level in range(levels):
            plan[level].append(f"fuse{fused_levels.index(level)}" if level in fused_levels else f"cnn{level}")
    if branches != "cnn":
        plan[cnn_level(vit_strides[2])].append("gab")
    return plan


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class SNet(nn.Module):
    """SNet: parallel CNN + hierarchical ViT, FEB, stagger FFB fusion, GAB and a CNN decoder.

    Geometry: ``vit_strides=(2, 4, 8, 16)`` (paper, default) | ``(4, 8, 16, 32)`` (legacy). Ablations
    (Tables 5-6) are arguments: ``fusion="stagger"|"unstagger"``, ``feb``, ``ffb``, ``gab``;
    ``branches="both"|"cnn"|"vit"`` gives the single-branch comparison models. ViT arguments left at
    ``None`` take the geometry's defaults (:data:`VIT_DEFAULTS`, :func:`default_vit_dims`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 9,
        *,
        vit_strides: tuple[int, ...] = PAPER_STRIDES,
        branches: Branches = "both",
        cnn_channels: tuple[int, ...] = (64, 128, 256, 512, 1024),
        vit_dims: tuple[int, ...] | None = None,
        vit_depths: tuple[int, ...] | None = None,
        vit_heads: tuple[int, ...] | None = None,
        vit_mlp_ratios: tuple[float, ...] | None = None,
        vit_sr_ratios: tuple[int, ...] | None = None,
        feb_heads: int = 2,
        gab_heads: int = 8,
        fusion: Fusion = "stagger",
        feb: bool = True,
        ffb: bool = True,
        gab: bool = True,
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        vit_strides = tuple(int(s) for s in vit_strides)
        if vit_strides not in VIT_DEFAULTS:
            raise ValueError(
                f"vit_strides must be {PAPER_STRIDES} (paper) or {LEGACY_STRIDES}, got {vit_strides}"
            )
        if branches not in ("both", "cnn", "vit"):
            raise ValueError(f"branches must be one of ['both', 'cnn', 'vit'], got {branches!r}")
        if len(cnn_channels) != 5:
            raise ValueError("cnn_channels needs 5 levels (strides 1, 2, 4, 8, 16)")
        cnn_channels = tuple(cnn_channels)
        preset = VIT_DEFAULTS[vit_strides]
        vit_dims = default_vit_dims(cnn_channels, vit_strides) if vit_dims is None else tuple(vit_dims)
        vit_depths = tuple(preset["depths"] if vit_depths is None else vit_depths)  # type: ignore[arg-type]
        vit_heads = tuple(preset["heads"] if vit_heads is None else vit_heads)  # type: ignore[arg-type]
        vit_mlp_ratios = tuple(preset["mlp_ratios"] if vit_mlp_ratios is None else vit_mlp_ratios)
        vit_sr_ratios = tuple(preset["sr_ratios"] if vit_sr_ratios is None else vit_sr_ratios)  # type: ignore[arg-type]
        if any(len(v) != 4 for v in (vit_dims, vit_depths, vit_heads, vit_mlp_ratios, vit_sr_ratios)):
            raise ValueError("the ViT branch has 4 stages: give 4 dims, depths, heads, mlp ratios, sr ratios")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.vit_strides = vit_strides
        self.branches = branches
        self.fusion = fusion
        use_cnn, use_vit = branches != "vit", branches != "cnn"
        self.use_feb, self.use_gab = feb and use_vit, gab and use_vit
        self.use_ffb = ffb and branches == "both"
        self.fused_levels = fusion_levels(fusion, vit_strides)
        if branches == "vit":  # the aux heads sit on the FEB outputs, at ViT stages 1/2's own grids
            self.fused_levels = (cnn_level(vit_strides[0]), cnn_level(vit_strides[1]))
        self.stride = max(16 if use_cnn else 1, vit_strides[3] if use_vit else 1)
        channels: dict[str, int] = {}

        # Parallel Module
        self.cnn = CNNBranch(in_channels, cnn_channels) if use_cnn else None
        channels.update({f"cnn{level}": c for level, c in enumerate(cnn_channels)})
        self.vit: nn.ModuleList | None = None
        self.feb: FeatureEnhancementBlock | None = None
        if use_vit:
            dpr = drop_path_rates(vit_depths, drop_path_rate)
            stages = []
            for i in range(4):
                stride = vit_strides[0] if i == 0 else 2
                stages.append(
                    TransformerStage(
                        in_channels if i == 0 else vit_dims[i - 1],
                        vit_dims[i],
                        depth=int(vit_depths[i]),
                        num_heads=int(vit_heads[i]),
                        patch_size=2 * stride - 1,  # PVT-v2's overlap: 7x7 for stride 4, 3x3 for stride 2
                        stride=stride,
                        mlp_ratio=float(vit_mlp_ratios[i]),
                        sr_ratio=int(vit_sr_ratios[i]),
                        qkv_bias=qkv_bias,
                        drop_path=dpr[i],
                    )
                )
            self.vit = nn.ModuleList(stages)
            channels.update({f"vit{i}": d for i, d in enumerate(vit_dims)})
            if self.use_feb:
                self.feb = FeatureEnhancementBlock((vit_dims[0], vit_dims[1]), feb_heads, qkv_bias)

        # Stagger Module (FFB per pair; with one branch, that branch's feature passes through) and y_f heads
        fusers: list[nn.Module] = []
        for k, level in enumerate(self.fused_levels):
            if branches == "both":
                block = FeatureFusionBlock if ffb else ResizeConcat
                fusers.append(block(cnn_channels[level], vit_dims[k]))
                channels[f"fuse{k}"] = fusers[k].out_channels
            else:
                channels[f"fuse{k}"] = cnn_channels[level] if branches == "cnn" else vit_dims[k]
        self.ffb = nn.ModuleList(fusers)
        self.fused_heads = nn.ModuleList(nn.Conv2d(channels[f"fuse{k}"], out_channels, 1) for k in range(2))

        # Information Recovery Module: GAB on ViT stages 3-4 (joins the decoder on stage 3's grid); decoder
        self.gab: nn.Module | None = None
        if use_vit:
            self.gab = (
                GlobalAttentionBlock(vit_dims[2], vit_dims[3], gab_heads, qkv_bias)
                if gab
                else ResizeConcat(vit_dims[2], vit_dims[3])  # GAB off
            )
            channels["gab"] = self.gab.out_channels
        self.plan = decoder_plan(branches, self.fused_levels, vit_strides, len(cnn_channels))
        if not self.plan[-1]:
            raise ValueError("the decoder's bottleneck (stride 16) has no input")
        ups = []
        c_in = sum(channels[name] for name in self.plan[-1])
        for level in range(len(cnn_channels) - 2, -1, -1):
            ups.append(UpBlock(c_in, sum(channels[name] for name in self.plan[level]), cnn_channels[level]))
            c_in = cnn_channels[level]
        self.decoder = nn.ModuleList(ups)
        self.head = nn.Conv2d(cnn_channels[0], out_channels, 1)

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        """Every feature the decoder plan names: ``cnn<l>``, ``vit<i>``, ``fuse0/1``, ``gab``."""
        feats: dict[str, Tensor] = {}
        if self.cnn is not None:
            feats.update({f"cnn{level}": f for level, f in enumerate(self.cnn(x))})  # strides 1, 2, 4, 8, 16
        if self.vit is not None:
            h = x
            for i, stage in enumerate(self.vit):  # strides vit_strides
                h = stage(h)
                feats[f"vit{i}"] = h
            if self.feb is not None:
                feats["vit0"], feats["vit1"] = self.feb(feats["vit0"], feats["vit1"])
            assert self.gab is not None
            feats["gab"] = self.gab(feats["vit2"], feats["vit3"])
        for k, level in enumerate(self.fused_levels):
            if self.branches == "both":
                feats[f"fuse{k}"] = self.ffb[k](feats[f"cnn{level}"], feats[f"vit{k}"])
            else:
                feats[f"fuse{k}"] = feats[f"cnn{level}" if self.branches == "cnn" else f"vit{k}"]
        return feats

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, "snet")
        size = tuple(x.shape[-2:])
        feats = self.encode(x)

        def level_input(level: int) -> Tensor | None:
            names = self.plan[level]
            return torch.cat([feats[n] for n in names], dim=1) if names else None

        y = level_input(len(self.plan) - 1)
        for up, level in zip(self.decoder, range(len(self.plan) - 2, -1, -1), strict=True):
            y = up(y, level_input(level))
        logits = self.head(y)
        fused = sum(resize_to(head(feats[f"fuse{k}"]), size) for k, head in enumerate(self.fused_heads))
        return SegOutput(logits=logits, aux={"fused": fused})


@register_model(
    "snet",
    paper="SNet (Stagger Network), Neural Networks 2025, arXiv 2403.19177",
    default_size=(224, 224),
    stride=16,
    legacy_defaults=[{"vit_strides": (4, 8, 16, 32)}],  # the default until the paper's strides (issue 14)
)
def snet(in_channels: int = 1, out_channels: int = 9, **kwargs: object) -> SNet:
    """SNet: parallel CNN + ViT with stagger fusion (FEB, FFB, GAB); ~38.7M parameters."""
    return SNet(in_channels, out_channels, **kwargs)  # type: ignore[arg-type]
