"""Run an exported medseg ``.onnx`` file with onnxruntime (the reading side of :mod:`medseg.export`).

Below :mod:`medseg.engine.predict` (``Predictor.from_run("model.onnx")`` uses it), which
:mod:`medseg.export` builds on, so the two never import each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medseg.utils import MedsegError


class OnnxModel:
    """Run an exported medseg ``.onnx`` file with onnxruntime: ``model(x) -> logits`` (NumPy, float32).

    Attributes: ``metadata`` (all ``metadata_props``), ``config`` (the stored config dict or ``None``),
    ``model_name``, ``in_channels``, ``out_channels``, ``stride``.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise MedsegError(f"ONNX file not found: {self.path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as err:
            raise MedsegError(f"{self.path}: cannot load ONNX model ({type(err).__name__}: {err})") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.model_name = self.metadata.get("medseg_model", "")
        try:
            raw = self.metadata.get("medseg_config")
            self.config: dict[str, Any] | None = json.loads(raw) if raw else None
            if self.config is not None and not isinstance(self.config, dict):
                raise ValueError("medseg_config is not a JSON object")
            self.in_channels = int(self.metadata.get("in_channels", 0)) or None
            self.out_channels = int(self.metadata.get("out_channels", 0)) or None
            self.stride = int(self.metadata.get("stride", 1))
            self.feedback_iters = int(self.metadata.get("medseg_feedback_iters", 1))
        except ValueError as err:
            raise MedsegError(f"{self.path}: bad medseg metadata in the ONNX file ({err})") from None

    @property
    def cfg(self) -> Any:
        """The stored config as a validated :class:`medseg.config.Config` (the file must carry one).

        ``eval.feedback_iters`` is 1: any feedback passes are already unrolled inside the graph.
        """
        from medseg.config import validate

        if self.config is None:
            raise MedsegError(f"{self.path}: no medseg_config in the ONNX metadata (exported from a bare model?)")
        data = json.loads(json.dumps(self.config))
        if isinstance(data.setdefault("eval", {}), dict):  # anything else: validate() names the problem
            data["eval"]["feedback_iters"] = 1
        return validate(data, where=str(self.path))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` float32 [B, C, H, W] (H, W multiples of ``stride``) -> logits [B, K, H, W]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected a [B, C, H, W] array, got shape {x.shape}")
        if self.stride > 1 and (x.shape[2] % self.stride or x.shape[3] % self.stride):
            raise ValueError(f"{self.model_name or 'model'}: input size {x.shape[2]}x{x.shape[3]} is not a "
                             f"multiple of {self.stride}")
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def as_module(self) -> nn.Module:
        """A torch module wrapping this session that returns ``SegOutput(logits)`` (for ``Predictor``)."""
        return _OnnxModule(self)


class _OnnxModule(nn.Module):
    """``nn.Module`` face of an :class:`OnnxModel`: CPU tensors in, ``SegOutput`` out (no autograd)."""

    def __init__(self, runner: OnnxModel) -> None:
        super().__init__()
        self.runner = runner
        self.stride = runner.stride
        self.medseg_name = runner.model_name

    def forward(self, x: Tensor, **_: Any) -> Any:
        from medseg.models import SegOutput

        logits = self.runner(x.detach().float().cpu().numpy())
        return SegOutput(torch.from_numpy(logits).to(x.device))
