"""MSNet and M2SNet: (multi-scale in) multi-scale subtraction networks.

Papers
    MSNet: X. Zhao, L. Zhang, H. Lu, "Automatic Polyp Segmentation via Multi-scale Subtraction
    Network", MICCAI 2021. M2SNet: X. Zhao, H. Jia, Y. Pang, L. Lv, F. Tian, L. Zhang, W. Sun,
    H. Lu, "M2SNet: Multi-scale in Multi-scale Subtraction Network for Medical Image
    Segmentation", arXiv 2303.10894.
Official code
    github.com/Xiaoqi-Zhao-DLUT/MSNet-M2SNet, ``model/miccai_msnet.py`` (classes ``MSNet``,
    ``M2SNet``, ``CNN1``, ``LossNet``), ``model/res2net.py``, ``train.py``.

Equations (F_A: the upper feature upsampled to the lower one's size, F_B: the lower feature)
    Eq. 1  SU  = Conv(|F_A - F_B|)                                  -> SubtractionPyramid(unit="su")
    Eq. 2  MSU = Conv(sum_{k in 1,3,5} |Filter_k(F_A) - Filter_k(F_B)|)
           with Filter_k a fixed all-ones k x k filter             -> SubtractionPyramid(unit="msu"),
                                                                      layers.fusion.FixedFilter
    Eq. 3  CE^i = Conv(sum_{n=1}^{6-i} MS^i_n)                      -> SubtractionPyramid.level_convs
    Conv = conv3x3(bias) - BN - ReLU everywhere (layers.conv.ConvNormAct(bias=True)).
    Eq. 4-6 (losses) live in ``medseg.losses.structure`` and ``medseg.losses.perceptual``.

Architecture (as the official code; class :class:`MSNet` below)
    Res2Net-50 (timm ``res2net50d`` == official ``res2net50_v1b_26w_4s``) -> x1 (stem after the
    max-pool, 64 ch, 1/4), x2..x5 (layer1..4: 256/512/1024/2048 ch at 1/4, 1/8, 1/16, 1/32).
    ``reduce`` (official ``x{2..5}_dem_1``): conv3x3 -> 64 ch for x2..x5; x1 is used raw.
    ``pyramid``: 10 subtraction units in 4 orders + ``x5_dem_4`` + CE convs (Eq. 1-3).
    Decoder: ``top_reduce`` (``x5_dem_5``, x5 -> 64) is upsampled and added to level4, conv
    (``output4``); then up + level3, conv (``output3``); up + level2, conv (``output2``); up + level1,
    ``head`` (``output1``, conv3x3 64 -> out_channels, no BN); bilinear upsampling to the input.

Ambiguities and the choices taken (NOTES.md sections 2 and 7)
    1. "3x3 convolution for each encoder block" (paper): the code reduces x2..x5 only; x1 (already
       64 ch) is used raw. We follow the code (parameter parity).
    2. Eq. 3 lists CE^1..CE^5; the code has level1..level4, level4 = x5_4 with *no* conv, and a
       separate reduction of x5 (``x5_dem_5``) enters the decoder. We follow the code.
    3. The fourth-order unit's upper operand gets an extra conv (``x5_dem_4``) in the code only.
       Kept (``SubtractionPyramid.top_conv``).
    4. Eq. 2's "full one filter": the code uses a *full* (C, C, k, k) all-ones weight (every output
       channel is the k x k box sum over all channels), followed by BatchNorm + ReLU, with one BN per
       kernel size shared by all 10 units and both operands (M2SNet has exactly 256 more trainable
       parameters than MSNet). The fixed weight is a non-persistent buffer (never a parameter,
       never in the state_dict), computed as channel sum + one k x k box filter (identical result).
       ``depthwise=True`` is the per-channel alternative (NOTES section 7 item 6). The 1x1 term is
       the raw difference.
    5. All upsampling is bilinear with ``align_corners=False`` (``F.upsample``'s default).
    6. One output, no deep supervision (``aux`` is empty).
    7. Input sizes must be multiples of 32 (clear error otherwise); the official code resizes to
       whatever the encoder gives.
    8. Backbone: timm ``res2net50d`` has the same architecture and tensor names as the official
       Res2Net-50-v1b-26w-4s; its ImageNet weights differ. ``pretrained=True`` downloads timm's;
       the official ImageNet file (``res2net50_v1b_26w_4s-3cf99910.pth``) loads with
       ``pretrained="/path/to/it"``; a trained official MSNet/M2SNet checkpoint loads with
       :func:`load_official_checkpoint`.
    9. Ablations are constructor arguments: Table 9 ``unit`` none (the FPN baseline: the reduced
       features x1..x4 go straight into the top-down decoder, whose top is x5's reduction; ours: the
       text names only "the common FPN network") / su / add and ``orders`` 1..4 (+SU_2 .. +SU_5); Table 11 ``kernel_sizes`` and
       ``filter_weights`` ones/gaussian; Table 12 ``unit`` msu / aspp / denseaspp (Fig. 7; its layout is
       not in the text: ours, ``layers.fusion``); ``depthwise`` (ours).
   11. Eq. 3 sums MS_1^i .. MS_{6-i}^i, i.e. the level-i input feature itself (MS_1^i) is a term of
       CE^i; the official code (and so ours) omits it: level1 = conv(x2_1 + x3_2_1 + x4_3_2_1 +
       x5_4_3_2_1) sums the subtraction units only. MGRAD-UNet's Eq. 2 has the same gap.
   10. ``out_channels = K >= 2`` gives a K-channel head (softmax); the official model is binary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from medseg.layers.conv import ConvNormAct
from medseg.layers.fusion import SubtractionPyramid
from medseg.layers.resize import check_input_size, resize_to, upsample_like
from medseg.models._backbones import TimmEncoder
from medseg.models._output import SegOutput
from medseg.models._registry import register_model
from medseg.models._weights import (
    LoadReport,
    StateDict,
    WeightLoadError,
    check_constant,
    load_matching,
    load_state_dict_file,
    map_keys,
    strip_prefixes,
)

_log = logging.getLogger(__name__)

PAPER_MSNET = "Zhao et al., Automatic Polyp Segmentation via Multi-scale Subtraction Network, MICCAI 2021"
PAPER_M2SNET = "Zhao et al., M2SNet: Multi-scale in Multi-scale Subtraction Network, arXiv 2303.10894"


class MSNet(nn.Module):
    """MSNet (``unit="su"``) / M2SNet (``unit="msu"``) on a Res2Net-50 encoder.

    Args:
        in_channels: image channels (timm ``in_chans``).
        out_channels: 1 (binary, sigmoid) or K >= 2 classes (softmax).
        unit: ``"su"`` (Eq. 1), ``"msu"`` (Eq. 2), ``"add"`` (addition units, Table 9), ``"none"`` (Table 9's
            FPN baseline: no units, the reduced features are the levels), ``"aspp"`` / ``"denseaspp"``
            (Table 12: a trainable ASPP / DenseASPP instead of the fixed filters inside the unit).
        kernel_sizes: fixed filter sizes of ``msu`` (Table 11), must contain 1.
        filter_weights: ``"ones"`` (paper) or ``"gaussian"`` (Table 11).
        depthwise: per-channel fixed filters instead of the official full ones.
        orders: pyramid orders used, 1..4 (Table 9's +SU_2 .. +SU_5; not Table 12, which compares units).
        pretrained: backbone weights: ``None``/``False`` random, ``True`` timm download, or a path.
        encoder: timm model name of the encoder.
        channels: width of the reduced features and of the decoder (64 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        *,
        unit: str = "su",
        kernel_sizes: Sequence[int] = (1, 3, 5),
        filter_weights: str = "ones",
        depthwise: bool = False,
        orders: int = 4,
        pretrained: bool | str | Path | None = None,
        encoder: str = "res2net50d",
        channels: int = 64,
    ) -> None:
        super().__init__()
        self.stride = 32
        self.unit = unit
        self.arch_name = "m2snet" if unit == "msu" else "msnet"
        self.backbone = TimmEncoder(encoder, in_channels=in_channels, pretrained=pretrained)
        if len(self.backbone.feature_channels) != 5:
            raise ValueError(
                f"{encoder}: MSNet needs 5 encoder levels, got {len(self.backbone.feature_channels)}"
            )
        c1, *deeper = self.backbone.feature_channels
        # x1 is used raw in the official code (64 channels already); other encoders get a reduction.
        self.reduce1 = nn.Identity() if c1 == channels else ConvNormAct(c1, channels, 3, bias=True)
        self.reduce = nn.ModuleList(ConvNormAct(c, channels, 3, bias=True) for c in deeper)  # x2..x5_dem_1
        self.pyramid = (
            None
            if unit == "none"
            else SubtractionPyramid(
                channels,
                unit=unit,
                kernel_sizes=tuple(kernel_sizes),
                filter_weights=filter_weights,
                depthwise=depthwise,
                orders=orders,
            )
        )
        # x5_dem_5; the FPN baseline's top is x5's lateral (x5_dem_1), which it would otherwise never use
        self.top_reduce = None if unit == "none" else ConvNormAct(deeper[-1], channels, 3, bias=True)
        self.decoder = nn.ModuleList(
            ConvNormAct(channels, channels, 3, bias=True) for _ in range(3)
        )  # output4..2
        self.head = nn.Conv2d(channels, out_channels, 3, padding=1)  # output1

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, self.arch_name)
        x1, *deeper = self.backbone(x)
        feats = [self.reduce1(x1)] + [r(f) for r, f in zip(self.reduce, deeper, strict=True)]
        # Eq. 1-3; Table 9's baseline (no units): FPN, the lateral features are the levels
        level1, level2, level3, level4 = feats[:4] if self.pyramid is None else self.pyramid(feats)
        d = feats[4] if self.top_reduce is None else self.top_reduce(deeper[-1])
        for level, conv in zip((level4, level3, level2), self.decoder, strict=True):
            d = conv(upsample_like(d, level) + level)
        out = self.head(upsample_like(d, level1) + level1)
        return SegOutput(logits=resize_to(out, tuple(x.shape[-2:])))


# -- official checkpoints ------------------------------------------------------------------------

# Official module name -> ours (everything under it keeps its suffix, e.g. ``.0.weight``, ``.1.running_mean``).
_OFFICIAL_MODULES: dict[str, str] = {
    "x2_dem_1": "reduce.0",
    "x3_dem_1": "reduce.1",
    "x4_dem_1": "reduce.2",
    "x5_dem_1": "reduce.3",
    "x2_x1": "pyramid.units.0.0",
    "x3_x2": "pyramid.units.0.1",
    "x4_x3": "pyramid.units.0.2",
    "x5_x4": "pyramid.units.0.3",
    "x3_x2_x1": "pyramid.units.1.0",
    "x4_x3_x2": "pyramid.units.1.1",
    "x5_x4_x3": "pyramid.units.1.2",
    "x4_x3_x2_x1": "pyramid.units.2.0",
    "x5_x4_x3_x2": "pyramid.units.2.1",
    "x5_x4_x3_x2_x1": "pyramid.units.3.0",
    "x5_dem_4": "pyramid.top_conv",
    "level1": "pyramid.level_convs.0",
    "level2": "pyramid.level_convs.1",
    "level3": "pyramid.level_convs.2",
    "x5_dem_5": "top_reduce",
    "output4": "decoder.0",
    "output3": "decoder.1",
    "output2": "decoder.2",
}
_FILTER_RE = re.compile(r"^conv_(\d+)\.(.*)$")  # M2SNet's CNN1 instances conv_3 / conv_5


def _filter_index(model: MSNet) -> dict[int, int]:
    return {f.kernel_size: i for i, f in enumerate(model.pyramid.filters)}


def official_key_to_ours(key: str, model: MSNet) -> str | None:
    """Our name for an official MSNet/M2SNet state_dict key (``None``: dropped on purpose).

    ``resnet.*`` -> ``backbone.model.*`` (``resnet.fc.*`` dropped); ``conv_K.norm.*`` -> the shared BN
    of the K x K fixed filter; ``conv_K.weight``/``bias`` (fixed ones / zeros, absent from official
    files) dropped; ``output1.0.*`` -> ``head.*``; the rest by :data:`_OFFICIAL_MODULES`.
    """
    if key.startswith("resnet."):
        rest = key[len("resnet.") :]
        return None if rest.startswith("fc.") else "backbone.model." + rest
    if key.startswith("output1.0."):
        return "head." + key[len("output1.0.") :]
    m = _FILTER_RE.match(key)
    if m:
        k, rest = int(m.group(1)), m.group(2)
        if rest in ("weight", "bias"):
            return None
        idx = _filter_index(model).get(k)
        return f"pyramid.filters.{idx}.{rest}" if idx is not None else key
    head, _, rest = key.partition(".")
    if head in _OFFICIAL_MODULES:
        return f"{_OFFICIAL_MODULES[head]}.{rest}"
    return key  # unknown: reported as unexpected by the strict load


def official_state_dict(model: MSNet) -> StateDict:
    """Our model's state_dict under the official key names (the inverse of the loading map)."""
    inverse = {v: k for k, v in _OFFICIAL_MODULES.items()}
    kernels = {i: f.kernel_size for i, f in enumerate(model.pyramid.filters)}
    out: StateDict = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.model."):
            out["resnet." + key[len("backbone.model.") :]] = value
        elif key.startswith("head."):
            out["output1.0." + key[len("head.") :]] = value
        elif key.startswith("pyramid.filters."):
            idx, rest = key[len("pyramid.filters.") :].split(".", 1)
            out[f"conv_{kernels[int(idx)]}.{rest}"] = value
        else:
            module = next(
                (m for m in sorted(inverse, key=len, reverse=True) if key.startswith(m + ".")), None
            )
            if module is None:
                raise KeyError(f"{key} has no official counterpart (a non-official configuration?)")
            out[inverse[module] + key[len(module) :]] = value
    return out


def load_official_checkpoint(
    model: MSNet, path_or_state_dict: str | Path | Mapping[str, Tensor]
) -> LoadReport:
    """Load an official MSNet/M2SNet state_dict (``torch.save(net.state_dict())``) into ``model``.

    Keys are mapped by :func:`official_key_to_ours` (DataParallel's ``module.`` is stripped) and
    loaded with a strict count: every tensor of ``model`` must be present with the right shape and
    nothing may be left over, otherwise :class:`WeightLoadError` explains what differs (e.g. an
    M2SNet file given to ``msnet``).
    """
    if isinstance(path_or_state_dict, Mapping):
        sd, source = dict(path_or_state_dict), "official state_dict"
    else:
        sd, source = load_state_dict_file(path_or_state_dict), str(path_or_state_dict)
    sd = strip_prefixes(sd, ("module.",))
    fixed = [
        k
        for k in sd
        if _FILTER_RE.match(k) and k.rsplit(".", 1)[-1] in ("weight", "bias") and ".norm." not in k
    ]
    check_constant(sd, [k for k in fixed if k.endswith("weight")], 1.0, source)
    check_constant(sd, [k for k in fixed if k.endswith("bias")], 0.0, source)
    mapped = map_keys(sd, lambda k: official_key_to_ours(k, model))
    if any(k.startswith("pyramid.filters.") or _FILTER_RE.match(k) for k in mapped) and model.unit != "msu":
        raise WeightLoadError(
            f"{source}: this is an M2SNet checkpoint (it has conv_3/conv_5); build 'm2snet' for it"
        )
    return load_matching(model, mapped, source=source)


# -- registered variants -------------------------------------------------------------------------


@register_model("msnet", paper=PAPER_MSNET, default_size=(352, 352), stride=32)
def msnet(in_channels: int = 3, out_channels: int = 1, unit: str = "su", **kwargs: object) -> MSNet:
    """MSNet: Res2Net-50 + pyramid of single-scale subtraction units (Eq. 1)."""
    return MSNet(in_channels, out_channels, unit=unit, **kwargs)  # type: ignore[arg-type]


@register_model("m2snet", paper=PAPER_M2SNET, default_size=(352, 352), stride=32)
def m2snet(in_channels: int = 3, out_channels: int = 1, unit: str = "msu", **kwargs: object) -> MSNet:
    """M2SNet: MSNet with multi-scale subtraction units (Eq. 2, fixed all-ones 1/3/5 filters)."""
    return MSNet(in_channels, out_channels, unit=unit, **kwargs)  # type: ignore[arg-type]
