"""MDA-U-Net (ω-Net): U-Net with a second, additional expansive path, multi-dimensional
self-attention (MDSA) on the links from the additional path into the original path, and cascade
multi-scale convolution (Cascade MSC) on every skip.

Paper: B. Wang et al., "Multi-dimensional attention segmentation model with cascade multi-scale
convolution" (MDA-U-Net / ω-Net), arXiv 2012.03674. No official code exists; every choice below is
ours and is also listed in ``docs/models/mda_unet.md`` (NOTES.md §4, §7 items 12-16).

Equations → code (``L = len(channels)`` levels, ``d = L`` in the paper's notation):

* Eq. 1  ``F_i = Pool_Max(Conv_2(F_{i-1}))``: ``self.encoder`` (two 3x3 conv-BN-ReLU per level,
  widths [64, 128, 256, 512, 1024]) with 2x2 max-pooling between levels; bottleneck 1024 x 32 x 32
  at 512 x 512 input (4 poolings, stride 16).
* Eq. 14 Cascade MSC on every encoder skip (levels 1..L-1, not the bottleneck): :class:`CascadeMSC`.
  One block per level; its output feeds both expansive paths and the MDSA input.
* Eq. 2-3 additional expansive path: ``ua_j = TConv(a_{j-1})`` (``a_0`` = bottleneck),
  ``a_j = Conv_2(cat(ua_j, skip_j))`` (``self.add_up``, ``self.add_dec``).
* Eq. 4-5 original expansive path: ``uo_j = TConv(o_{j-1})``,
  ``o_j = Conv_2(cat(uo_j, MDSA(cat(ua_j, skip_j))))`` (``self.up``, ``self.attention``, ``self.dec``).
* Eq. 6 auxiliary head ``Conv_{64xL}`` on the last additional-path feature: ``self.aux_head``,
  returned as ``aux["additional"]`` at input size. Eq. 7 the main head ``self.head``.
* Eq. 8 ``L = L_s + λ L_a``: not in the model; criterion terms on ``logits`` (weight 1) and
  ``aux/additional`` (weight λ = 0.1, NOTES §7 item 15: the paper's λ_m/λ_out = 1/10).
* Eq. 9-11 dense spatial position attention: :class:`DensePositionAttention`.
* Eq. 12-13 channel attention: ``channel_attention="danet"`` (default, ours: DANet's CAM,
  :class:`ChannelAttention`) or ``"paper"`` (the printed equations, :class:`PaperChannelAttention`).

Choices (the paper leaves them open):

1. *Trans_Conv in Eq. 2-5* is read as a standard U-Net decoder level: a 2x2 stride-2 transposed
   convolution halving the channels, concatenation with the skip at the same resolution, then two
   3x3 conv-BN-ReLU. Eq. 3 and Eq. 5 both concatenate ``(F^ua_{j-1}, F_{d-j})``, and Eq. 9 names the
   same pair as the MDSA input, so one tensor ``M_j = cat(ua_j, skip_j)`` is convolved by the
   additional path and, after MDSA, concatenated into the original path. Each path has its own
   transposed convolutions (also from the shared bottleneck).
2. *Cascade MSC* (NOTES §7 item 14): ``C5``, ``C3``, ``C1`` are conv-BN-ReLU keeping C channels; the
   final 1x1 maps 4C -> C and is also conv-BN-ReLU, so the skip keeps the non-negative statistics of
   an encoder feature. Params per block: ``39 C^2 + 8 C``.
3. *DSPA* (NOTES §7 item 12). With ``M`` reshaped to C x N: ``S = DilatedConv3x3(M)`` (C -> K maps,
   dilation 2, with bias, no norm/activation) reshaped to K x N; ``D = M softmax_N(S)^T`` is C x K
   (each dense feature is an attention-pooled C-vector); Eq. 10 ``A = softmax_K(M^T D)`` is N x K
   (the paper's denominator sums to N, a typo: the softmax runs over the K dense features that
   ``i`` indexes); Eq. 11 ``O = D A^T + M`` is C x N. Largest intermediate: N x K; no N x N matrix.
   No learnable scale: Eq. 11 adds the attended features to ``M`` directly.
4. *CA* (NOTES §7 item 13) follows DANet's CAM: energy ``M' M'^T`` (C x C), the "max minus energy"
   trick ``softmax(max_i e_{j,i} - e_{j,i})`` (which equals ``softmax(-e)``: it favours *dissimilar*
   channels, unlike Eq. 12 as printed, but it is what DANet does and trains), and
   ``O' = γ A' M' + M'`` with a learnable scalar γ initialised to 0 (identity at initialisation).
   ``channel_attention="paper"`` computes Eq. 12-13 exactly as printed instead: ``A' = softmax_i(M' M'^T)``
   (row-wise; the printed sum to N is read as a sum over the C channels ``i`` indexes), ``O' = A' M' + M'``,
   no γ (so no parameter) and no max trick; ``"none"`` (or ``False``) switches CA off.
5. Both attention products run in float32 even under mixed precision: the C x C energy sums N (up to
   262 144) products and overflows float16.
6. *MDSA* = DSPA then CA, only on the links from the additional path into the original path (one
   per decoder level, on 2C channels: the upsampled additional feature + the skip).
7. *Output mapping*. The paper's output layer has 2 sigmoid channels (organ incl. tumour, tumour)
   trained with per-channel BCE. Our contract is softmax over K classes incl. background (or one
   sigmoid channel): we use ``out_channels = 3`` = (background, organ, tumour) with exclusive labels
   as KiTS19 / MSD store them; the paper's organ channel corresponds to ``p_organ + p_tumour`` (the
   foreground union its metrics use) and its tumour channel to ``p_tumour``. CE on K = 3 classes is
   the softmax analogue of its BCE. The paper's own head is the recipes' ``paper_text`` presets:
   ``data.targets: regions`` builds the model with ``out_channels = 2`` sigmoid channels (organ incl.
   tumour, tumour), trained with ``region_bce`` and decoded to background / organ / tumour by
   :mod:`medseg.engine.decode`; the model itself only sees ``out_channels``.
8. *Switches*. ``additional_path=False`` gives a plain U-Net (with Cascade MSC if ``cascade_msc``):
   no additional path, no MDSA (they only exist on its links), no ``aux_head`` -- so the state_dict
   legitimately lacks those keys and ``aux`` is empty. ``mdsa=False`` passes ``M_j`` unchanged;
   ``position_attention`` (bool) / ``channel_attention`` (``"danet"`` | ``"paper"`` | ``"none"``; ``True`` /
   ``False`` = danet / none) choose DSPA/CA inside MDSA.
9. ``channels`` may be narrowed (e.g. for CPU runs); the stride is ``2 ** (len(channels) - 1)``.
   Weights use PyTorch's default initialisation.

Parameters (in_channels=1, out_channels=3, defaults): 60 119 410 (plain U-Net with the same widths:
31 036 611; Cascade MSC +13 585 920; additional path, its head and the original path's wider first
convs +15 324 035; MDSA +172 844).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct
from medseg.layers.resize import check_input_size
from medseg.models._output import SegOutput
from medseg.models._registry import register_model

# ---------------------------------------------------------------------------------------------------
# Blocks (only this paper defines them: they stay in this file)
# ---------------------------------------------------------------------------------------------------


def _double_conv(in_channels: int, out_channels: int, norm: str | None, act: str | None) -> nn.Sequential:
    """Two 3x3 conv-norm-act (U-Net's ``Conv_2``, Eq. 1)."""
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3, norm=norm, act=act),
        ConvNormAct(out_channels, out_channels, 3, norm=norm, act=act),
    )


class CascadeMSC(nn.Module):
    """Cascade multi-scale convolution (Eq. 14), C -> C channels.

    ``X1 = C5(X)``, ``X2 = C3(X + X1)``, ``X3 = C1(X + X2)``, ``Y = C1(cat(X, X1, X2, X3))``.
    """

    def __init__(self, channels: int, norm: str | None = "bn", act: str | None = "relu") -> None:
        super().__init__()
        self.conv5 = ConvNormAct(channels, channels, 5, norm=norm, act=act)
        self.conv3 = ConvNormAct(channels, channels, 3, norm=norm, act=act)
        self.conv1 = ConvNormAct(channels, channels, 1, norm=norm, act=act)
        self.fuse = ConvNormAct(4 * channels, channels, 1, norm=norm, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv5(x)
        x2 = self.conv3(x + x1)
        x3 = self.conv1(x + x2)
        return self.fuse(torch.cat([x, x1, x2, x3], dim=1))


def _fp32(x: Tensor) -> torch.autocast:
    """Context that disables autocast so attention products stay in float32 (choice 5)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _tokens(m: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> float32 tokens ``[B, N, C]``.

    The products below are written token-major: for a channels_last map (the fast path) this is a view, and
    BLAS then reads both operands row-major. The channel-major ``[B, C, N]`` view of a channels_last map made
    ``bmm`` fall off its fast path (0.5 s for one 128 x 262144 x 10 product at 512^2, against 30 ms).
    """
    b, c, h, w = m.shape
    return m.float().permute(0, 2, 3, 1).reshape(b, h * w, c)


def _to_map(tokens: Tensor, like: Tensor) -> Tensor:
    """Tokens ``[B, N, C]`` back to a map shaped, typed and laid out (contiguous / channels_last) like ``like``."""
    b, c, h, w = like.shape
    channels_last = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return tokens.view(b, h, w, c).permute(0, 3, 1, 2).to(dtype=like.dtype, memory_format=fmt)


class DensePositionAttention(nn.Module):
    """Dense spatial position attention (DSPA, Eq. 9-11) with K dense features.

    ``D = M softmax_N(S)^T`` (C x K), ``A = softmax_K(M^T D)`` (N x K), ``O = D A^T + M`` (C x N).
    """

    def __init__(self, channels: int, K: int = 10, dilation: int = 2) -> None:
        super().__init__()
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        self.K = K
        # The "dilated convolution block" producing K spatial maps S (K x N).
        self.dense = nn.Conv2d(channels, K, 3, padding=dilation, dilation=dilation)

    @staticmethod
    def _dense_t(s: Tensor, tokens: Tensor) -> Tensor:
        """``D^T`` [B, K, C] from the K maps ``S`` and the tokens ``M^T``; call with autocast off."""
        weights = F.softmax(s.float().flatten(2), dim=-1)  # softmax_N(S) [B, K, N]
        return torch.bmm(weights, tokens)

    def dense_features(self, m: Tensor) -> Tensor:
        """D [B, C, K]: each dense feature pools M over positions with softmax_N(S) weights."""
        s = self.dense(m)
        with _fp32(m):
            return self._dense_t(s, _tokens(m)).transpose(1, 2)

    def forward(self, m: Tensor) -> Tensor:
        s = self.dense(m)  # under autocast, like every conv
        with _fp32(m):
            mt = _tokens(m)  # M^T [B, N, C]
            dt = self._dense_t(s, mt)  # D^T [B, K, C]
            attn = F.softmax(torch.bmm(mt, dt.transpose(1, 2)), dim=-1)  # Eq. 10, A [B, N, K]
            out = torch.bmm(attn, dt) + mt  # Eq. 11, O^T = A D^T + M^T [B, N, C]
        return _to_map(out, m)


class ChannelAttention(nn.Module):
    """DANet channel attention (Eq. 12-13): ``O' = γ softmax(max(E) - E) M' + M'``, ``E = M' M'^T``."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        with _fp32(x):
            xt = _tokens(x)  # M'^T [B, N, C]
            energy = torch.bmm(xt.transpose(1, 2), xt)  # [B, C, C]
            energy = energy.amax(dim=-1, keepdim=True) - energy  # DANet's max-minus-energy
            attn = F.softmax(energy, dim=-1)  # Eq. 12
            out = self.gamma.float() * torch.bmm(xt, attn.transpose(1, 2)) + xt  # Eq. 13 transposed, with γ
        return _to_map(out, x)


class PaperChannelAttention(nn.Module):
    """Channel attention exactly as printed (Eq. 12-13), no parameters.

    Eq. 12 ``a'_{j,i} = exp(M'_i · M'_j) / Σ_i exp(M'_i · M'_j)``: ``A' = softmax_i(M' M'^T)`` row-wise (the
    printed sum runs to N; ``i`` indexes the C channels of the C x C matrix A', so it runs to C). Eq. 13
    ``O'_j = Σ_i a'_{j,i} M'_i + M'_j``: ``O' = A' M' + M'``. No γ, no max-minus-energy.
    """

    def forward(self, x: Tensor) -> Tensor:
        with _fp32(x):
            xt = _tokens(x)  # M'^T [B, N, C]
            attn = F.softmax(torch.bmm(xt.transpose(1, 2), xt), dim=-1)  # Eq. 12, [B, C, C]
            out = torch.bmm(xt, attn.transpose(1, 2)) + xt  # Eq. 13 transposed
        return _to_map(out, x)


#: ``channel_attention`` values: the module each builds (``none``: CA switched off).
CHANNEL_ATTENTION = {"danet": ChannelAttention, "paper": PaperChannelAttention, "none": nn.Identity}


def _channel_attention_kind(value: bool | str) -> str:
    """``"danet"`` / ``"paper"`` / ``"none"``; ``True`` / ``False`` (the older switch) mean danet / none."""
    if value is True or value is False:
        return "danet" if value else "none"
    if value not in CHANNEL_ATTENTION:
        raise ValueError(f"channel_attention must be one of {', '.join(map(repr, CHANNEL_ATTENTION))}, got {value!r}")
    return str(value)


class MDSA(nn.Module):
    """Multi-dimensional self-attention: DSPA then CA, each switchable (identity when off)."""

    def __init__(
        self,
        channels: int,
        K: int = 10,
        position_attention: bool = True,
        channel_attention: bool | str = "danet",
        dilation: int = 2,
    ) -> None:
        super().__init__()
        self.position: nn.Module = (
            DensePositionAttention(channels, K=K, dilation=dilation) if position_attention else nn.Identity()
        )
        self.channel: nn.Module = CHANNEL_ATTENTION[_channel_attention_kind(channel_attention)]()

    def forward(self, m: Tensor) -> Tensor:
        return self.channel(self.position(m))


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


class MDAUNet(nn.Module):
    """MDA-U-Net / ω-Net (Fig. 1): encoder, Cascade MSC skips, additional + original expansive paths.

    Returns ``SegOutput(logits, aux={"additional": ...})`` (aux empty when ``additional_path=False``).
    """

    #: run in float32 under bf16 inference (``medseg.engine.fast.keep_fp32_under_autocast``). Measured on a
    #: trained covid19-ct-semiseg run (48 test slices): all-bf16 masks agreed with fp32 on 99.23 % of pixels,
    #: mean Dice -0.006; with this full-resolution first block (raw CT intensities) in fp32, 99.85 %, -0.0006.
    #: Attention, skips, decoders or heads in fp32 instead changed nothing (99.23-99.29 %).
    bf16_fp32_modules: tuple[str, ...] = ("encoder.0",)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        *,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        K: int = 10,
        mdsa: bool = True,
        position_attention: bool = True,
        channel_attention: bool | str = "danet",
        cascade_msc: bool = True,
        additional_path: bool = True,
        dilation: int = 2,
        norm: str | None = "bn",
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels}")
        self.channels = channels
        self.stride = 2 ** (len(channels) - 1)
        self.additional_path = additional_path
        channel_attention = _channel_attention_kind(channel_attention)
        self.use_mdsa = mdsa and additional_path and (position_attention or channel_attention != "none")

        # Eq. 1: contracting path.
        self.encoder = nn.ModuleList(
            _double_conv(cin, cout, norm, act)
            for cin, cout in zip([in_channels] + channels[:-1], channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        # Eq. 14: Cascade MSC on every skip (identity when switched off).
        self.skip = nn.ModuleList(
            CascadeMSC(c, norm=norm, act=act) if cascade_msc else nn.Identity() for c in channels[:-1]
        )

        # Decoder levels from the deepest (j = 0) to the shallowest.
        dec_levels = list(range(len(channels) - 2, -1, -1))
        # Eq. 4-5: original expansive path.
        link = 2 if additional_path else 1  # the link carries cat(ua_j, skip_j) or just skip_j
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in dec_levels
        )
        self.dec = nn.ModuleList(
            _double_conv(channels[i] * (1 + link), channels[i], norm, act) for i in dec_levels
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)  # Eq. 7 output layer

        if additional_path:
            # Eq. 2-3: additional expansive path, Eq. 6: its head.
            self.add_up = nn.ModuleList(
                nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in dec_levels
            )
            self.add_dec = nn.ModuleList(
                _double_conv(2 * channels[i], channels[i], norm, act) for i in dec_levels
            )
            self.aux_head = nn.Conv2d(channels[0], out_channels, 1)
            # Eq. 9-13: MDSA on the links from the additional path into the original path.
            self.attention = nn.ModuleList(
                MDSA(
                    2 * channels[i],
                    K=K,
                    position_attention=position_attention,
                    channel_attention=channel_attention,
                    dilation=dilation,
                )
                if self.use_mdsa
                else nn.Identity()
                for i in dec_levels
            )

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, "mda_unet")
        feats: list[Tensor] = []
        h = x
        for i, block in enumerate(self.encoder):  # Eq. 1
            h = block(self.pool(h) if i else h)
            feats.append(h)
        skips = [m(f) for m, f in zip(self.skip, feats[:-1], strict=True)]  # Eq. 14

        o = a = feats[-1]
        for j in range(len(self.up)):
            s = skips[len(skips) - 1 - j]
            uo = self.up[j](o)  # Eq. 4-5 upsampling
            if self.additional_path:
                m = torch.cat([self.add_up[j](a), s], dim=1)  # Eq. 3 / Eq. 9: M = cat(F^ua_j, F_{d-j})
                a = self.add_dec[j](m)
                link = self.attention[j](m)  # Eq. 9-13
            else:
                link = s
            o = self.dec[j](torch.cat([uo, link], dim=1))  # Eq. 5
        aux = {"additional": self.aux_head(a)} if self.additional_path else {}  # Eq. 6
        return SegOutput(logits=self.head(o), aux=aux)


# ---------------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------------


@register_model(
    "mda_unet",
    paper="MDA-U-Net / ω-Net, arXiv 2012.03674",
    default_size=(512, 512),
    stride=16,
)
def mda_unet(in_channels: int = 1, out_channels: int = 3, **kwargs: object) -> MDAUNet:
    """MDA-U-Net (ω-Net): dual expansive paths, MDSA links, Cascade MSC skips."""
    return MDAUNet(in_channels, out_channels, **kwargs)  # type: ignore[arg-type]
