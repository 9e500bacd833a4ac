"""MGRAD-UNet: multi-gated reverse attention multi-scale differential UNet.

Paper: S. Yan, B. Yang, A. Chen, "A differential network with multiple gated reverse attention for
medical image segmentation", Scientific Reports 14 (2024). Author's code: ``iPARTyS/Differential-Network``
(``networks/my_net_addRA.py``, ``networks/my_net.py``, ``networks/UEncoder.py``, ``trainer.py``,
``train_ACDC.py``); it does not run as shipped and is used as a design reference only (NOTES §1).

Equations -> code (full map in ``docs/models/mgrad_unet.md``):

- Encoder E_1..E_5 (64..1024 channels, strides 1..16): :class:`Encoder`.
- Eq. 8 R_i = RFB(E_i or E'_i), 64 channels: ``MGRADUNet.adapters`` (:class:`medseg.layers.multiscale.RFB`).
- Eq. 7 E'_i = E_i + lambda (G_i - M_i), lambda = 1e-3: added to the 64-channel R_i (see choice 2);
  ``forward(x, feedback)`` adds ``feedback[i]``; ``extras["feedback"]`` returns lambda (G_i - M_i).
- Eq. 1 DP = Conv(|Conv(Up(R_{i+1})) - Conv(R_i)|): as in the author's code (and MSNet), the two inner
  per-operand convs are absent -- DP = Conv(|Up(R_{i+1}) - R_i|) -- so Eq. 1 over-states the convs.
- Eq. 1 DP and Eq. 2 M_i = Conv(sum_n CL_n^i): the subtraction pyramid
  (:class:`medseg.layers.fusion.SubtractionPyramid`) plus the top-down path of
  :class:`DifferentialDecoder` (MSD).
- Eq. 4 RA_i = (1 - sigma(M_i)) R_i, Eq. 5-6 G_i: the same decoder with ``gates`` (GRAD).
- Eq. 3 SConv = Conv1x1(Up^{i-1}(M_i)): ``MGRADUNet.side_heads`` (1x1 first, then upsampling; a 1x1 conv
  commutes with bilinear upsampling, so the order is immaterial).
- Eq. 9-13 and Algorithm 1 (losses): ``medseg.losses.aggregated``; the feedback loop (3 passes per batch)
  is a training strategy of the engine (``strategy: feedback``), not part of the model.

Ambiguity choices (NOTES §1 and §7 items 1-5; ours are marked "ours"):

1. Topology: the ``my_net_addRA.py`` layout (NOTES §7 item 1): one RFB per encoder level maps E_i to 64
   channels before both decoders. ``my_net.py`` (per-decoder RFBs, raw E_1, a 64->1024 feedback RFB) is
   about 156 M parameters and contradicts the paper's "fewest parameters" claim (Fig. 3).
2. Feedback injection: the 64-channel RFB outputs, R_i + lambda (G_i - M_i) (addRA). The difference is
   computed by the model but NOT detached; the engine's feedback strategy detaches it (``trainer.py``).
3. Encoder block: the addRA ``UEncoder.DoubleConv`` (conv3x3-BN-ReLU, conv3x3-BN, then
   ``ReLU(h + BN(conv1x1(h)))`` with a biased 1x1) -- the only encoder that gives NOTES §1's ~24.1 M.
   ``residual_encoder=False`` gives the paper text's plain conv3x3-BN-ReLU x2 (-1.40 M parameters).
4. RFB inner activation: addRA's ``BasicConv2d`` has a ReLU, PraNet's has none. We follow the code whose
   topology we take (``rfb_act="relu"``); ``rfb_act=None`` is PraNet's. Same parameter count.
5. Decoder convs: addRA's ``BasicConv2d`` (bias-free conv + BN + ReLU) for every pyramid unit, level and
   output conv; no ``x5_dem_4`` conv before the fourth-order unit (``my_net.py`` and MSNet have one);
   ``output1`` is a plain biased 3x3 conv (no BN/ReLU), then a 1x1 head. addRA's MSD also owns an unused
   ``smooth1`` conv; ours has none (-36,992 parameters against the code).
6. Reverse attention (NOTES §7 item 1, revised): by default the gates of ``my_net_addRA.py``, the code
   ``train_synapse.py`` trains (the 83.33 Synapse result): ``grad_gate="additive"``, first-order unit k
   takes |Up(x_{k+1}) + x_k (1 - w_k)| (a sum of non-negative RFB outputs, so effectively an addition), and
   ``detach_gate=False``: w_k = sigmoid(M_k) is not detached, so GRAD's loss also trains MSD through the
   gates. ``grad_gate="subtractive"`` + ``detach_gate=True`` is ``my_net.py`` (the ACDC code);
   ``grad_gate="paper"`` is the text: RA_i = (1 - sigma(M_i)) R_i on all five levels (Eq. 4), then Eq. 1's
   plain DP. Higher-order units are ungated. Top level (code): x5 -> smooth(x5 (1 + w5)); M_5 is MSD's
   top stage feature, i.e. R_5 itself (addRA returns ``output5 = x5``). Checked against the author's
   addRA forward with the same weights: max |diff| <= 1e-5 (``docs/models/mgrad_unet.md``).
7. ``reverse_attention=False`` (ours, the Fig. 4 ablation): GRAD gets no gates at all -- raw lower
   operands and smooth(x5) at the top; the ``smooth`` conv still exists, so the state_dict is unchanged.
8. ``use_rfb=False`` (Tables 3-4; the code's ``my_net_NoRFBSideConv`` module is missing): a 1x1
   conv-BN-ReLU per level to 64 channels, so both decoders still get 64 channels (ours).
9. SideConv heads always exist (contract: the state_dict does not depend on the losses used);
   ``side_conv=False`` only stops returning ``side1..5``, and a recipe must then drop their loss term
   (the criterion raises a clear error otherwise). Upsampling: repeated x2 bilinear with
   ``align_corners=True`` (the code's ``SideConv``), exact because every level is a power-of-two
   reduction of the input.
10. Input channels (ours): no grey -> RGB repeat (the code repeats 1 channel to 3); the first conv takes
    ``in_channels`` directly. The repeat is a reparametrisation of that conv (3 kernels summed), so it
    only adds ``2 * 64 * 9`` parameters.
11. Outputs: ``logits`` = MSD logits + GRAD logits (the code's inference, ``utils.py``); ``aux``: ``msd``,
    ``grad``, ``side1`` (from M_1, full resolution) .. ``side5`` (from M_5, the coarsest); Eq. 3's index.
12. Upsampling inside the decoders: bilinear, ``align_corners=False`` (the code's
    ``F.interpolate(scale_factor=2)``), to the size of the finer operand (works for any stride-16 size).

Parameters (in_channels=3, out_channels=9): 24,097,663 (the addRA code: 24,134,655) -- see ``docs/models/mgrad_unet.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct
from medseg.layers.fusion import SubtractionPyramid
from medseg.layers.multiscale import RFB
from medseg.layers.resize import check_input_size, upsample_like
from medseg.models._output import SegOutput
from medseg.models._registry import register_model

STRIDE = 16
ENCODER_CHANNELS = (64, 128, 256, 512, 1024)
GRAD_GATES = ("additive", "subtractive", "paper")


# --------------------------------------------------------------------------------------------- blocks
class EncoderBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN(-ReLU); with ``residual`` then ``ReLU(h + BN(conv1x1(h)))`` (addRA)."""

    def __init__(self, in_channels: int, out_channels: int, *, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, act=None if residual else "relu")
        self.residual = ConvNormAct(out_channels, out_channels, 1, bias=True, act=None) if residual else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(self.conv1(x))
        if self.residual is None:
            return h
        return self.relu(h + self.residual(h))


class Encoder(nn.Module):
    """Five stages (64..1024 channels) with 2x2 max-pooling between them: E_1 (stride 1) .. E_5 (stride 16)."""

    def __init__(
        self, in_channels: int, channels: Sequence[int] = ENCODER_CHANNELS, *, residual: bool = True
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.stages = nn.ModuleList(
            EncoderBlock(widths[i], widths[i + 1], residual=residual) for i in range(len(channels))
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(self.pool(x) if i else x)
            feats.append(x)
        return feats


class DifferentialDecoder(nn.Module):
    """MSD (Fig. 6, Eq. 1-2) or, with ``gated=True``, GRAD (Fig. 7, Eq. 4-6).

    ``forward(features, gates=None)`` takes the five 64-channel R_i (finest first) and returns
    ``(logits, [S_1, .., S_5])``: logits at the resolution of R_1 and the stage features
    ``S_1 = out1, S_2 = out2, S_3 = out3, S_4 = out4, S_5 = top`` (M_i for MSD, G_i for GRAD).
    ``gates`` (GRAD only) are w_1..w_5 = sigmoid(M_i); ``gate`` picks how they enter (``GRAD_GATES``):

    - ``"additive"`` (addRA code): top T = smooth(R_5 (1 + w_5)); first-order unit k takes
      ``|Up(T or R_{k+1}) + R_k (1 - w_k)|``.
    - ``"subtractive"`` (``my_net.py``): the same with ``-``.
    - ``"paper"`` (Eq. 4 then Eq. 1): every level is RA_i = (1 - w_i) R_i, T = smooth(RA_5), and the
      first-order units are the plain DP ``|Up(RA_{k+1}) - RA_k|`` (the smooth conv on the top is ours).
    """

    def __init__(
        self, out_channels: int, width: int = 64, *, gated: bool = False, gate: str = "additive"
    ) -> None:
        super().__init__()
        if gate not in GRAD_GATES:
            raise ValueError(f"unknown grad_gate {gate!r}; use one of {GRAD_GATES}")
        self.gate = gate
        # Eq. 1-2: DP units of all orders + per-level aggregation (bias-free BasicConv2d, no x5_dem_4).
        self.pyramid = SubtractionPyramid(width, unit="su", bias=False, top_conv=False)
        # GRAD top: x5 -> smooth(x5 * (1 + w5)) (addRA ``smooth1``).
        self.smooth = ConvNormAct(width, width, 3) if gated else None
        # Top-down path: out_k = conv(up(out_{k+1}) + level_k); out1 is a plain biased conv.
        self.out_convs = nn.ModuleList(ConvNormAct(width, width, 3) for _ in range(3))  # out2, out3, out4
        self.out1 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(
        self, features: Sequence[Tensor], gates: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        x1, x2, x3, x4, x5 = features
        lower = None
        if gates is not None and self.gate == "paper":  # Eq. 4 on every level, then Eq. 1's DP
            x1, x2, x3, x4, x5 = (r * (1 - w) for r, w in zip(features, gates, strict=True))
            x5 = self.smooth(x5)
        elif gates is not None:  # the code's gates: smooth(R_5 (1 + w_5)) and reverse attention on R_1..R_4
            x5 = self.smooth(x5 * (1 + gates[4]))
            lower = [r * (1 - w) for r, w in zip(features[:4], gates[:4], strict=True)]
        elif self.smooth is not None:
            x5 = self.smooth(x5)
        level1, level2, level3, level4 = self.pyramid(
            [x1, x2, x3, x4, x5], lower, first_order_sum=lower is not None and self.gate == "additive"
        )
        out4 = self.out_convs[2](upsample_like(x5, level4) + level4)
        out3 = self.out_convs[1](upsample_like(out4, level3) + level3)
        out2 = self.out_convs[0](upsample_like(out3, level2) + level2)
        out1 = self.out1(upsample_like(out2, level1) + level1)
        return self.head(out1), [out1, out2, out3, out4, x5]


# ---------------------------------------------------------------------------------------------- model
class MGRADUNet(nn.Module):
    """MGRAD-UNet (Fig. 1): encoder -> RFB -> MSD and GRAD, SideConv heads, feedback difference.

    Args:
        in_channels: image channels (1 for CT/MR; no grey-to-RGB repeat).
        out_channels: 1 (binary, sigmoid) or K classes incl. background (softmax).
        encoder_channels: widths of E_1..E_5.
        width: decoder width (the RFB output channels, 64 in the paper).
        use_rfb: RFB on every level (Eq. 8); ``False`` = a 1x1 conv-BN-ReLU to ``width`` (ablation, Tables 3-4).
        rfb_act: activation inside the RFB convs (``"relu"`` = addRA code, ``None`` = PraNet).
        residual_encoder: addRA's DoubleConv with a 1x1 residual (``True``) or plain conv-BN-ReLU x2.
        reverse_attention: gate GRAD with MSD's stage features (Eq. 4); ``False`` = ungated GRAD (Fig. 4).
        grad_gate: how the gates enter GRAD: ``"additive"`` (addRA, the Synapse code behind 83.33),
            ``"subtractive"`` (``my_net.py``) or ``"paper"`` (Eq. 4 on all five levels); see
            :class:`DifferentialDecoder`.
        detach_gate: detach w_i = sigmoid(M_i) (``my_net.py``); ``False`` (addRA) lets GRAD's loss reach MSD.
        side_conv: return the SideConv outputs ``side1..5`` (Eq. 3); the heads always exist.
        feedback_lambda: lambda of Eq. 7 (1e-3).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 9,
        *,
        encoder_channels: Sequence[int] = ENCODER_CHANNELS,
        width: int = 64,
        use_rfb: bool = True,
        rfb_act: str | None = "relu",
        residual_encoder: bool = True,
        reverse_attention: bool = True,
        grad_gate: str = "additive",
        detach_gate: bool = False,
        side_conv: bool = True,
        feedback_lambda: float = 1e-3,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5:
            raise ValueError(
                f"MGRAD-UNet has 5 encoder levels; got encoder_channels={list(encoder_channels)}"
            )
        self.stride = STRIDE
        self.out_channels = out_channels
        self.width = width
        self.use_rfb = use_rfb
        self.reverse_attention = reverse_attention
        self.detach_gate = detach_gate
        self.side_conv = side_conv
        self.feedback_lambda = float(feedback_lambda)
        self.encoder = Encoder(in_channels, encoder_channels, residual=residual_encoder)
        # Eq. 8: R_i = RFB(E_i), 64 channels (or the 1x1 ablation).
        self.adapters = nn.ModuleList(
            RFB(c, width, act=rfb_act) if use_rfb else ConvNormAct(c, width, 1) for c in encoder_channels
        )
        self.msd = DifferentialDecoder(out_channels, width)
        self.grad = DifferentialDecoder(out_channels, width, gated=True, gate=grad_gate)
        # Eq. 3: one 1x1 head per MSD stage feature M_1..M_5.
        self.side_heads = nn.ModuleList(nn.Conv2d(width, out_channels, 1) for _ in range(5))

    @staticmethod
    def _upsample_side(y: Tensor, level: int) -> Tensor:
        """``level`` successive x2 bilinear upsamplings with ``align_corners=True`` (the code's SideConv)."""
        for _ in range(level):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        return y

    def _check_feedback(self, feedback: Sequence[Tensor], feats: Sequence[Tensor]) -> None:
        if len(feedback) != len(feats):
            raise ValueError(
                f"mgrad_unet: feedback needs {len(feats)} tensors (one per level), got {len(feedback)}"
            )
        for i, (f, r) in enumerate(zip(feedback, feats, strict=True)):
            if f.shape != r.shape:
                raise ValueError(
                    f"mgrad_unet: feedback[{i}] has shape {tuple(f.shape)}, expected {tuple(r.shape)} "
                    "(the RFB output of that level; pass the previous pass's extras['feedback'] for the same batch)"
                )

    def forward(self, x: Tensor, feedback: Sequence[Tensor] | None = None) -> SegOutput:
        """One pass. ``feedback`` = the previous pass's ``extras["feedback"]`` (Eq. 7), or ``None``."""
        check_input_size(x, self.stride, "mgrad_unet")
        feats = [adapter(e) for adapter, e in zip(self.adapters, self.encoder(x), strict=True)]
        if feedback is not None:
            self._check_feedback(feedback, feats)
            feats = [r + f for r, f in zip(feats, feedback, strict=True)]  # Eq. 7 at the 64-channel R_i
        msd_logits, m = self.msd(feats)
        gates = None
        if self.reverse_attention:  # Eq. 4: w_i = sigmoid(M_i), detached only on request (my_net.py)
            gates = [torch.sigmoid(mk.detach() if self.detach_gate else mk) for mk in m]
        grad_logits, g = self.grad(feats, gates)
        aux = {"msd": msd_logits, "grad": grad_logits}
        if self.side_conv:
            for k, (head, mk) in enumerate(zip(self.side_heads, m, strict=True)):
                aux[f"side{k + 1}"] = self._upsample_side(head(mk), k)  # Eq. 3
        # Eq. 7: lambda (G_i - M_i), not detached (the feedback strategy detaches it).
        fb = [self.feedback_lambda * (gk - mk) for gk, mk in zip(g, m, strict=True)]
        return SegOutput(logits=msd_logits + grad_logits, aux=aux, extras={"feedback": fb})


# ------------------------------------------------------------------------------------------- variants
@register_model("mgrad_unet", paper="MGRAD-UNet", default_size=(224, 224), stride=STRIDE)
def mgrad_unet(in_channels: int = 3, out_channels: int = 9, **kwargs: object) -> MGRADUNet:
    """MGRAD-UNet (Yan et al., Sci. Rep. 2024): dual differential decoders with gated reverse attention and feedback."""
    return MGRADUNet(in_channels, out_channels, **kwargs)  # type: ignore[arg-type]
