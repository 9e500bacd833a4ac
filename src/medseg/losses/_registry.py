"""Loss registry: criterion terms name their loss; ``build_loss`` makes it.

A loss is an ``nn.Module`` called as ``loss(logits, target)`` with ``logits`` [B, C, h, w] (C = 1 means
binary/sigmoid) and ``target`` int64 [B, h, w] already resized to the logits. A loss with the class
attribute ``multi_output = True`` is called as ``loss([logits_1, ..., logits_n], target)``.

This module imports none of the losses: the package (:mod:`medseg.losses`) hands it a loader
(:func:`add_member_loader`) that imports the loss modules on the first lookup, as :mod:`medseg.models` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medseg.config import ConfigError

_LOSSES: dict[str, Callable[..., nn.Module]] = {}
_MEMBER_LOADERS: list[Callable[[], None]] = []


def register_loss(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = cls
        return cls

    return wrap


def add_member_loader(loader: Callable[[], None]) -> None:
    """Run ``loader`` (which imports loss modules) before the next lookup of the registry."""
    _MEMBER_LOADERS.append(loader)


def _ensure_loaded() -> None:
    while _MEMBER_LOADERS:
        _MEMBER_LOADERS[0]()
        _MEMBER_LOADERS.pop(0)


def loss_names() -> list[str]:
    _ensure_loaded()
    return sorted(_LOSSES)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build loss ``name``; an unknown name or a bad keyword argument is a :class:`ConfigError`."""
    _ensure_loaded()
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid names: {', '.join(sorted(_LOSSES))}")
    try:
        return _LOSSES[name](**kwargs)
    except TypeError as err:
        if not kwargs:  # no user arguments: a bug, not a config mistake
            raise
        raise ConfigError(f"loss {name!r}: bad kwargs: {err}") from None
