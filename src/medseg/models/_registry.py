"""Model registry: every architecture is built by name through :func:`build_model`.

This module imports none of the architectures (as timm's ``_registry``): the package
(:mod:`medseg.models`) hands it a loader with :func:`add_member_loader`, run on the first lookup, that
imports the architecture modules, whose ``@register_model`` decorators fill the table. Python imports
the package before this module, so the loader is always there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medseg.config import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    paper: str
    default_size: tuple[int, int]
    stride: int
    description: str


_REGISTRY: dict[str, ModelEntry] = {}
_MEMBER_LOADERS: list[Callable[[], None]] = []


def register_model(
    name: str,
    *,
    paper: str = "",
    default_size: tuple[int, int] = (224, 224),
    stride: int = 32,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(in_channels, out_channels, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _REGISTRY[name] = ModelEntry(name, fn, paper, tuple(default_size), stride, doc)
        return fn

    return wrap


def add_member_loader(loader: Callable[[], None]) -> None:
    """Run ``loader`` (which imports model modules) before the next lookup of the registry."""
    _MEMBER_LOADERS.append(loader)


def _ensure_loaded() -> None:
    while _MEMBER_LOADERS:
        _MEMBER_LOADERS[0]()  # removed only once it succeeded: a failed import fails every lookup alike
        _MEMBER_LOADERS.pop(0)


def model_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, in_channels: int = 3, out_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model. ``out_channels == 1`` is binary (sigmoid), ``K >= 2`` is softmax.

    An unknown name, a keyword argument the builder does not take or a value it rejects (``ValueError``)
    is a :class:`ConfigError`.
    """
    entry = get_entry(name)
    try:
        model = entry.builder(in_channels=in_channels, out_channels=out_channels, **kwargs)
    except (TypeError, ValueError) as err:
        if not kwargs:  # no user arguments: a bug, not a config mistake
            raise
        raise ConfigError(f"model {name!r}: bad model.kwargs: {err}") from None
    model.medseg_name = name  # type: ignore[attr-defined]
    model.stride = getattr(model, "stride", entry.stride)  # type: ignore[attr-defined]
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def list_models(
    pattern: str | Sequence[str] = "", with_params: bool = True, in_channels: int = 3, out_channels: int = 1
) -> list[dict[str, Any]]:
    """Name, paper, default input size, stride, description and (optionally) trainable parameters of
    every model whose name matches ``pattern`` (shell-style, as timm's ``list_models("*unet*")``).

    Parameter counts for 3 -> 1 channels come from the package's table (:mod:`medseg.catalog`); other
    channels or models not in it are counted by building them on the meta device (no weights allocated).
    """
    from medseg.catalog import PARAMS_CHANNELS, match_names, read_catalog

    cached: dict[str, int] = {}
    if with_params and (in_channels, out_channels) == PARAMS_CHANNELS:
        cached = {r["name"]: r["params"] for r in read_catalog()}
    rows = []
    for name in match_names(model_names(), pattern):
        e = _REGISTRY[name]
        row: dict[str, Any] = {
            "name": name,
            "paper": e.paper,
            "default_size": e.default_size,
            "stride": e.stride,
            "description": e.description,
        }
        if with_params:
            if name not in cached:
                with torch.device("meta"):
                    cached[name] = count_parameters(build_model(name, in_channels, out_channels))
            row["params"] = cached[name]
        rows.append(row)
    return rows
