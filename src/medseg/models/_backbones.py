"""A timm ``features_only`` encoder that returns a list of feature maps, finest first.

``TimmEncoder("res2net50d")`` is the official MSNet/M2SNet backbone ``res2net50_v1b_26w_4s``
(deep stem, average-pool shortcut, same tensor names and shapes): features x1..x5 with 64, 256,
512, 1024 and 2048 channels at strides 4, 4, 8, 16, 32. timm's own first feature is the stem
activation ``act1`` at stride 2; the official code uses the stem output *after* the max-pool, so for
ResNet-like models with a ``maxpool`` module (``pooled_stem``, on by default for ``res2net*``)
the first tap is moved from ``act1`` to ``maxpool``.

Weights never download unless asked: ``pretrained=None``/``False`` is random,
``pretrained=True`` downloads through timm (the full classifier model is built and loaded
strictly by timm, its classifier dropped, then the rest copied with a strict count),
``pretrained="/path/file"`` loads a local state_dict (``.pth``/``.pt``/``.bin``/``.safetensors``,
optionally prefixed ``module.``/``resnet.``/``backbone.``/``encoder.``; the classifier is dropped).
Loading always goes through :func:`medseg.models._weights.load_matching`, never timm's
non-strict ``features_only`` path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from medseg.models._weights import (
    StateDict,
    WeightLoadError,
    load_matching,
    load_state_dict_file,
    strip_prefixes,
)

_log = logging.getLogger(__name__)

# Prefixes that wrap backbone weights in common checkpoints (DataParallel, the official MSNet, ...).
BACKBONE_FILE_PREFIXES = ("module.", "resnet.", "backbone.model.", "backbone.", "encoder.", "model.")
# Classifier / pooling tensors a backbone file may hold that a features_only encoder has no use for.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


class TimmEncoder(nn.Module):
    """timm ``features_only`` adapter: ``forward(x) -> [f1, ..., fn]`` (finest first).

    Args:
        name: timm model name (e.g. ``"res2net50d"``).
        in_channels: input channels (timm's ``in_chans``; pretrained stems are adapted by timm's
            ``adapt_input_conv`` rule when loading a 3-channel file).
        pretrained: ``None``/``False`` (random), ``True`` (download via timm) or a file path.
        out_indices: which of timm's feature levels to return (default: all).
        pooled_stem: tap the stem after its max-pool (stride 4) instead of timm's ``act1``
            (stride 2). ``None`` = on for ``res2net*`` models (the official MSNet features).

    Attributes: ``feature_channels`` and ``reductions`` (stride of each returned feature).
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        pretrained: bool | str | Path | None = None,
        out_indices: Sequence[int] | None = None,
        pooled_stem: bool | None = None,
    ) -> None:
        super().__init__()
        import timm

        self.name = name
        self.in_channels = in_channels
        kwargs = {"features_only": True, "pretrained": False, "in_chans": in_channels}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.model = timm.create_model(name, **kwargs)
        info = self.model.feature_info
        taps = list(info.module_name())
        channels = list(info.channels())
        reductions = list(info.reduction())
        modules = list(self.model.keys())
        if pooled_stem is None:
            pooled_stem = name.startswith("res2net")
        if pooled_stem:
            if "act1" not in taps or "maxpool" not in modules:
                raise ValueError(f"{name}: pooled_stem needs a stem 'act1' followed by a 'maxpool' module")
            i = taps.index("act1")
            taps[i] = "maxpool"
            reductions[i] *= 2
        self.pooled_stem = pooled_stem
        self.taps = taps
        self.feature_channels: list[int] = channels
        self.reductions: list[int] = reductions
        if pretrained:
            self.load_pretrained(pretrained)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        wanted = set(self.taps)
        last = self.taps[-1]
        for name, module in self.model.items():
            x = module(x)
            if name in wanted:
                feats.append(x)
            if name == last:
                break
        return feats

    # -- weights ----------------------------------------------------------------------------------
    def load_pretrained(self, pretrained: bool | str | Path) -> None:
        """Load ImageNet weights (``True``: timm download) or a local file, with a strict count."""
        if pretrained is True:
            sd, source = self._timm_pretrained_state_dict(), f"timm pretrained weights of {self.name}"
        else:
            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.name}: pretrained weight file not found: {path} "
                    "(give an existing .pth/.safetensors file, true to download via timm, or null for random weights)"
                )
            sd, source = load_state_dict_file(path), str(path)
        self.load_backbone_state_dict(sd, source=source)

    def load_backbone_state_dict(self, state_dict: StateDict, source: str = "state_dict") -> None:
        """Copy a timm/official-layout backbone state_dict (classifier dropped) with a strict count."""
        sd = strip_prefixes(strip_prefixes(state_dict, BACKBONE_FILE_PREFIXES), BACKBONE_FILE_PREFIXES)
        sd = {k: v for k, v in sd.items() if not k.startswith(CLASSIFIER_PREFIXES)}
        own = self.model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own or not self._beyond_last_tap(k)}
        sd = self._adapt_stem(sd, own, source)
        load_matching(self.model, sd, source=source)

    def _beyond_last_tap(self, key: str) -> bool:
        # With out_indices, timm truncates the modules after the last tap; such tensors are not "unexpected".
        top = key.split(".", 1)[0]
        return top not in self.model.keys()

    def _adapt_stem(self, sd: StateDict, own: StateDict, source: str) -> StateDict:
        """Adapt 3-channel stem weights to ``in_channels`` (timm's rule) when they differ."""
        if self.in_channels == 3:
            return sd
        from timm.models import adapt_input_conv

        out = dict(sd)
        for k, v in sd.items():
            if k in own and v.ndim == 4 and v.shape[1] == 3 and own[k].shape[1] == self.in_channels:
                out[k] = adapt_input_conv(self.in_channels, v)
                _log.info("%s: adapted %s from 3 to %d input channels", source, k, self.in_channels)
        return out

    def _timm_pretrained_state_dict(self) -> StateDict:
        import timm

        try:
            full = timm.create_model(self.name, pretrained=True, in_chans=self.in_channels)
        except Exception as err:  # noqa: BLE001 - offline hub, no cache, ...
            raise WeightLoadError(
                f"{self.name}: could not fetch timm's ImageNet weights {timm_weight_file(self.name)} "
                f"({type(err).__name__}); without internet access, download them elsewhere and set "
                "model.kwargs.pretrained=/path/to/the/file"
            ) from None
        return full.state_dict()


def timm_weight_file(name: str) -> str:
    """Where timm fetches ``name``'s default pretrained weights from, in words (no network access)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return f"of {name}"
    if cfg.hf_hub_id:
        return f"{cfg.hf_hub_id} (model.safetensors from the Hugging Face hub, cached under $HF_HOME)"
    return str(cfg.url or cfg.file or name)
