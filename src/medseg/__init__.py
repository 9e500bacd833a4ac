"""medseg: medical image segmentation with the multi-scale / difference / attention U-Net family.

Imports are lazy: ``import medseg`` is cheap; torch, MONAI, timm and Lightning load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "list_models"]


def __getattr__(name: str):
    if name in ("build_model", "list_models"):
        from medseg import models

        return getattr(models, name)
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
