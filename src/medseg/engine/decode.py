"""From logits to probabilities and label maps, for the two kinds of targets (``data.targets``).

- ``classes`` (default): one channel = binary (sigmoid, label 1 where p > 0.5), K >= 2 channels =
  K classes with background (softmax, argmax).
- ``regions``: K - 1 sigmoid channels for a K-class label map whose classes are nested regions,
  channel k = "label >= k + 1" (MDA-U-Net's output layer: organ incl. tumour, tumour). The label map
  is nnU-Net's region-based decoding (``convert_probabilities_to_segmentation`` with
  ``regions_class_order``): start from background and, region by region in order, set label k + 1
  where p_k > 0.5 -- so a later (inner) region wins: p_organ 0.9, p_tumour 0.8 -> tumour (2);
  p_organ 0.9, p_tumour 0.2 -> organ (1); a tumour above 0.5 outside the organ channel is still tumour.

Light (torch only): :class:`~medseg.engine.predict.Predictor` and the training task both use it.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Values of ``data.targets``.
TARGETS = ("classes", "regions")


def to_probabilities(logits: Tensor, targets: str = "classes") -> Tensor:
    """``[B, C, H, W]`` logits -> probabilities: sigmoid per channel (binary, regions), else softmax."""
    if targets == "regions" or logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def to_labels(probs: Tensor, targets: str = "classes") -> Tensor:
    """``[B, C, H, W]`` probabilities -> int64 label map ``[B, H, W]`` (see the module docstring)."""
    if targets == "regions" or probs.shape[1] == 1:
        levels = torch.arange(1, probs.shape[1] + 1, device=probs.device).view(1, -1, 1, 1)
        return ((probs > 0.5).long() * levels).amax(dim=1)
    return probs.argmax(1)


def logits_to_labels(logits: Tensor, targets: str = "classes") -> Tensor:
    """Label map straight from logits (p > 0.5 is logit > 0; argmax of logits = argmax of softmax)."""
    if targets == "regions" or logits.shape[1] == 1:
        levels = torch.arange(1, logits.shape[1] + 1, device=logits.device).view(1, -1, 1, 1)
        return ((logits > 0).long() * levels).amax(dim=1)
    return logits.argmax(1)
