"""Shared building blocks: the only home of blocks used by more than one model."""

from medseg.layers.conv import ConvNormAct, make_act, make_norm
from medseg.layers.resize import check_input_size, resize_to, upsample_like

__all__ = ["ConvNormAct", "check_input_size", "make_act", "make_norm", "resize_to", "upsample_like"]
