"""medseg: medical image segmentation with the multi-scale / difference / attention U-Net family.

The public API: ``build_model``, ``list_models``, ``Predictor``, ``load_run``, ``predict``. Imports are
lazy (PEP 562): ``import medseg`` is cheap; torch, MONAI, timm and Lightning load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from medseg._version import __version__

#: public name -> the module that defines it
_LAZY = {
    "build_model": "medseg.models",
    "list_models": "medseg.models",
    "Predictor": "medseg.engine.predict",
    "load_run": "medseg.api",
    "predict": "medseg.api",
    "MedsegError": "medseg.utils",
}

__all__ = ["MedsegError", "Predictor", "__version__", "build_model", "list_models", "load_run", "predict"]

if TYPE_CHECKING:
    from medseg.api import load_run, predict
    from medseg.engine.predict import Predictor
    from medseg.models import build_model, list_models
    from medseg.utils import MedsegError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
