"""LossNet: a frozen VGG-16 perceptual loss between the predicted map and the mask (M2SNet Eq. 5-6).

Official ``LossNet`` (``model/miccai_msnet.py``): VGG-16 ``features[:4]``, ``[4:9]``, ``[9:16]``,
``[16:23]`` (relu1_2, relu2_2, relu3_3, relu4_3), inputs ``sigmoid(logits)`` and the mask repeated
to 3 channels, normalised with ImageNet mean/std, resized bilinearly to 224 x 224
(``align_corners=False``); the loss is the sum over the 4 levels of the mean squared error
(Eq. 6 writes an L2 distance; the code, followed here, uses ``mse_loss``). The official training
adds it with weight 0.1 (Eq. 4 says 1): that weight is the criterion term's ``weight``.

Weights (never downloaded unless asked): ``weights="imagenet"`` fetches torchvision's
``VGG16_Weights.IMAGENET1K_V1`` once into torch's cache; ``weights="/path/vgg16.pth"`` reads a local
torchvision ``vgg16`` state_dict (``features.N.*``, classifier ignored) or a features-only one
(``N.*``), with a strict count; ``weights=None`` refuses to build unless ``allow_random=True``.

The VGG tensors are fixed: they are stored as non-persistent buffers, so the loss has no
parameters at all, never enters an optimizer, and adds nothing to checkpoints (it is rebuilt from
``weights``). The module stays in eval mode whatever ``train()`` is called with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.losses._registry import register_loss
from medseg.losses.structure import _binary_target

_log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGG-16 feature slices ending at relu1_2, relu2_2, relu3_3, relu4_3.
VGG16_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23))

_NO_WEIGHTS = (
    "LossNet needs ImageNet VGG-16 weights: set the lossnet term's kwargs to `weights: imagenet` (downloads "
    "torchvision's vgg16-397923af.pth, 528 MB, once into the torch cache) or `weights: /path/to/vgg16.pth` "
    "(a torchvision vgg16 state_dict or its features only). `allow_random: true` runs it with random "
    "weights, which is not the paper's loss; or drop the lossnet term."
)


def _vgg16_features(end: int) -> nn.Sequential:
    """torchvision's VGG-16 ``features[:end]`` (random init, no download)."""
    try:
        from torchvision.models.vgg import cfgs, make_layers

        return make_layers(cfgs["D"], batch_norm=False)[:end]
    except ImportError:  # pragma: no cover - older/newer torchvision layouts
        from torchvision.models import vgg16

        return vgg16(weights=None).features[:end]


def _features_state_dict(state_dict: Mapping[str, Tensor], end: int) -> dict[str, Tensor]:
    """Map a torchvision vgg16 (``features.N.*``) or features-only (``N.*``) state_dict to ``N.*`` with N < end."""
    out = {}
    for k, v in state_dict.items():
        for pre in ("module.", "vgg.", "model."):
            if k.startswith(pre):
                k = k[len(pre) :]
        if k.startswith("classifier."):
            continue
        if k.startswith("features."):
            k = k[len("features.") :]
        m = re.match(r"^(\d+)\.", k)
        if m and int(m.group(1)) >= end:
            continue  # deeper VGG layers LossNet does not use
        out[k] = v
    return out


def _freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter into a non-persistent buffer (fixed, out of optimizers and checkpoints)."""
    for sub in module.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, p.detach(), persistent=False)


@register_loss("lossnet")
class LossNet(nn.Module):
    """Frozen VGG-16 perceptual loss on one-channel logits (see the module docstring).

    Args:
        weights: ``"imagenet"`` (torchvision download, only when asked), a file path, or ``None``.
        allow_random: allow ``weights=None`` (random VGG; for tests and smoke runs only).
        resize: side of the square the maps are resized to (224); ``None`` keeps their size.
    """

    def __init__(
        self, weights: str | Path | None = None, allow_random: bool = False, resize: int | None = 224
    ) -> None:
        super().__init__()
        end = VGG16_SLICES[-1][1]
        features = _vgg16_features(end)
        if weights is None:
            if not allow_random:
                raise ValueError(_NO_WEIGHTS)
            _log.warning("LossNet runs with a randomly initialised VGG-16 (allow_random=True)")
        else:
            self._load(features, weights, end)
        _freeze_as_buffers(features)
        self.blocks = nn.ModuleList(features[a:b] for a, b in VGG16_SLICES)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.resize = resize
        self.weights = None if weights is None else str(weights)
        super().train(False)

    @staticmethod
    def _load(features: nn.Sequential, weights: str | Path, end: int) -> None:
        from medseg.models._weights import WeightLoadError, load_matching, load_state_dict_file

        if str(weights) == "imagenet":
            from torchvision.models import VGG16_Weights

            try:
                sd = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
            except Exception as err:  # noqa: BLE001 - offline, proxy, ...
                raise WeightLoadError(
                    f"LossNet: could not fetch torchvision's VGG-16 ImageNet weights vgg16-397923af.pth "
                    f"(cached under $TORCH_HOME/hub/checkpoints; {type(err).__name__}); download it elsewhere and set "
                    "the lossnet term's kwargs.weights=/path/to/vgg16-397923af.pth"
                ) from None
            source = "torchvision VGG16_Weights.IMAGENET1K_V1"
        else:
            path = Path(str(weights)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"LossNet: VGG-16 weight file not found: {path}. {_NO_WEIGHTS}")
            sd, source = load_state_dict_file(path), str(path)
        load_matching(features, _features_state_dict(sd, end), source=source)

    def train(self, mode: bool = True) -> LossNet:
        """Always eval: the VGG is a fixed feature extractor."""
        return super().train(False)

    def _prepare(self, x: Tensor) -> Tensor:
        x = (x.repeat(1, 3, 1, 1) - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.resize is not None:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def level_features(self, x: Tensor) -> list[Tensor]:
        """relu1_2, relu2_2, relu3_3, relu4_3 of a prepared 3-channel input."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        mask = _binary_target(logits, target, "lossnet")
        pred = torch.sigmoid(logits.float())
        with torch.no_grad():
            target_feats = self.level_features(self._prepare(mask))
        pred_feats = self.level_features(self._prepare(pred))
        loss = pred.new_zeros(())
        for fp, fg in zip(pred_feats, target_feats, strict=True):
            loss = loss + F.mse_loss(fp.float(), fg.float())
        return loss
