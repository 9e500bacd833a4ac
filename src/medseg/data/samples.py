"""The sample dict of the data contract and its batching (``docs/dev/contracts.md``).

Below both :mod:`medseg.data.base` (the slice dataset) and :mod:`medseg.data.transforms`, which use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Sample = dict[str, Any]


def plain_tensor(x: Any) -> torch.Tensor:
    """A plain, contiguous torch tensor (MONAI ``MetaTensor`` meta dropped)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).contiguous()


def finalize_sample(sample: Sample) -> Sample:
    """Image -> float32 tensor ``[C, H, W]``; label ``[1, H, W]`` -> int64 ``[H, W]``."""
    out = dict(sample)
    out["image"] = plain_tensor(sample["image"]).to(torch.float32)
    if sample.get("label") is not None:
        lab = plain_tensor(sample["label"])
        if lab.ndim == 3:
            lab = lab[0]
        out["label"] = (lab.round() if lab.is_floating_point() else lab).to(torch.int64)
    return out


def collate_samples(batch: Sequence[Sample]) -> Sample:
    """Stack ``image`` (and ``label`` when every sample has one); other keys become lists."""
    out: Sample = {"image": torch.stack([b["image"] for b in batch])}
    if all(b.get("label") is not None for b in batch):
        out["label"] = torch.stack([b["label"] for b in batch])
    for key in batch[0]:
        if key not in ("image", "label"):
            out[key] = [b.get(key) for b in batch]
    return out
