"""Adapter that gives a network returning plain tensors the :class:`SegOutput` contract."""

from __future__ import annotations

from torch import Tensor, nn

from medseg.layers.resize import check_input_size
from medseg.models._output import SegOutput


class TensorToSegOutput(nn.Module):
    """Wrap ``net`` (returning a tensor, or a list whose first item is the final prediction).

    Further list items become ``aux["ds1"]``, ``aux["ds2"]``... (deep-supervision heads).
    """

    def __init__(self, net: nn.Module, stride: int, name: str) -> None:
        super().__init__()
        self.net = net
        self.stride = stride
        self.model_name = name

    def forward(self, x: Tensor) -> SegOutput:
        check_input_size(x, self.stride, self.model_name)
        out = self.net(x)
        if isinstance(out, (list, tuple)):
            return SegOutput(out[0], {f"ds{i}": t for i, t in enumerate(out[1:], start=1)})
        return SegOutput(out)
