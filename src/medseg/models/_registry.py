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
    legacy_defaults: tuple[dict[str, Any], ...] = ()


_REGISTRY: dict[str, ModelEntry] = {}
_MEMBER_LOADERS: list[Callable[[], None]] = []


def register_model(
    name: str,
    *,
    paper: str = "",
    default_size: tuple[int, int] = (224, 224),
    stride: int = 32,
    description: str = "",
    legacy_defaults: Sequence[dict[str, Any]] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(in_channels, out_channels, **kwargs) -> nn.Module`` under ``name``.

    ``legacy_defaults``: keyword defaults of earlier medseg versions, newest first (e.g. ``{"vit_strides":
    (4, 8, 16, 32)}``), so a checkpoint written before a default changed, which stored only the kwargs the
    user gave, still loads (:func:`legacy_kwargs`). Checkpoints now store every keyword
    (:func:`resolved_kwargs`), so later changes of a default cannot alter them.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _REGISTRY[name] = ModelEntry(name, fn, paper, tuple(default_size), stride, doc,
                                     tuple(dict(d) for d in legacy_defaults))
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


def resolved_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with every other keyword at its default (tuples as lists): what a checkpoint stores, so
    that the model it describes does not change when a default changes. A builder taking ``**kwargs``
    passes them to the class it returns (its annotation): that class's keyword defaults count too."""
    import inspect
    import typing

    builder = get_entry(name).builder
    sources = []
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        cls = typing.get_type_hints(builder).get("return")
        if isinstance(cls, type):
            sources.append(inspect.signature(cls.__init__).parameters)
    sources.append(params)  # the builder's own defaults win (msnet's unit="su" over MSNet's)
    out: dict[str, Any] = {}
    for source in sources:
        for key, p in source.items():
            if key in ("self", "in_channels", "out_channels") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is not inspect.Parameter.empty:
                out[key] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out | dict(kwargs)


def legacy_kwargs(name: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's earlier defaults applied to ``kwargs`` (keys the caller gave win), newest first; for
    loading a checkpoint whose weights do not fit today's defaults."""
    out = []
    for old in get_entry(name).legacy_defaults:
        if any(k not in kwargs for k in old):
            out.append({**old, **kwargs})
    return out


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
