"""ONNX export of a model's ``logits`` (dynamic batch and spatial size) and a minimal onnxruntime runner.

``export_onnx(run_dir_or_model, "model.onnx")`` traces a thin wrapper that returns only ``logits``
with torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)`` + ``dynamic_shapes``; batch is
free and H, W are free multiples of the model's stride); if that exporter fails, the legacy
TorchScript exporter with ``dynamic_axes`` is tried. The file carries what ``medseg predict`` needs in
its ``metadata_props``:

- ``medseg_config``: the resolved config (JSON) -- pre-processing, classes, eval settings;
- ``medseg_model``, ``in_channels``, ``out_channels``, ``stride``, ``medseg_version``.

:class:`~medseg.engine.onnx_runtime.OnnxModel` (re-exported here) runs such a file with onnxruntime (``model(x) -> logits`` on NumPy arrays);
``OnnxModel.cfg`` validates the stored config and ``OnnxModel.as_module()`` gives a torch module that
returns :class:`~medseg.models.SegOutput`, so ``Predictor(onnx.as_module(), onnx.cfg)`` works unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medseg.engine.onnx_runtime import OnnxModel
from medseg.utils import MedsegError, atomic_write, check_output_file

_log = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "LogitsOnly", "OnnxModel", "export_onnx"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# Largest dynamic H, W (in strides) and batch the exported graph accepts; only bounds for the tracer.
_MAX_BATCH = 4096
_MAX_STEPS = 1024


class LogitsOnly(nn.Module):
    """``model(x).logits`` -- the part of :class:`~medseg.models.SegOutput` that inference needs.

    ``feedback_iters > 1`` unrolls MGRAD-UNet's test-time feedback passes as ``Predictor.logits`` runs
    them (each pass gets the previous pass's ``extras["feedback"]``).
    """

    def __init__(self, model: nn.Module, feedback_iters: int = 1) -> None:
        super().__init__()
        self.model = model
        self.feedback_iters = feedback_iters

    def forward(self, x: Tensor) -> Tensor:
        if self.feedback_iters <= 1:
            return self.model(x).logits
        feedback = None
        for _ in range(self.feedback_iters):
            out = self.model(x, feedback=feedback)
            feedback = out.extras.get("feedback")
        return out.logits


def _first_conv_in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def _resolve(model_or_run_dir: nn.Module | str | Path, meta: dict[str, Any]) -> nn.Module:
    """The eval model and (filled into ``meta``) model name, channels and config."""
    if isinstance(model_or_run_dir, nn.Module):
        model = model_or_run_dir
        meta.setdefault("medseg_model", getattr(model, "medseg_name", type(model).__name__))
        if meta.get("in_channels") is None:
            meta["in_channels"] = _first_conv_in_channels(model)
        return model.eval()
    from medseg.engine.predict import Predictor

    run_dir = Path(model_or_run_dir)
    predictor = Predictor.from_run(run_dir, checkpoint=meta.pop("checkpoint", "best"))
    cfg = predictor.cfg
    meta.update(
        medseg_model=cfg.model.name,
        in_channels=cfg.data.in_channels,
        out_channels=cfg.data.out_channels,
        config=cfg.to_dict(),
        size=tuple(cfg.data.size),
        feedback_iters=int(cfg.eval.feedback_iters or 1),
    )
    return predictor.model.eval()


def _dynamo_export(wrapper: nn.Module, x: Tensor, stride: int, opset: int, dynamic: bool) -> Any:
    from torch.export import Dim

    shapes = None
    if dynamic:
        # H and W are multiples of the stride (the models check it), so they are stride * Dim.
        shapes = {
            "x": {
                0: Dim("batch", min=1, max=_MAX_BATCH),
                2: stride * Dim("h_steps", min=1, max=_MAX_STEPS),
                3: stride * Dim("w_steps", min=1, max=_MAX_STEPS),
            }
        }
    program = torch.onnx.export(
        wrapper,
        (x,),
        dynamo=True,
        dynamic_shapes=shapes,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    if dynamic:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        fixed = [i for i in (0, 2, 3) if dims[i].HasField("dim_value")]
        if fixed:  # the exporter fell back to a strategy that ignored dynamic_shapes
            raise RuntimeError(f"exported graph has static input dimension(s) {fixed}")
    return proto


def _legacy_export(wrapper: nn.Module, x: Tensor, opset: int, dynamic: bool) -> Any:
    import io

    import onnx

    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    buf = io.BytesIO()
    torch.onnx.export(
        wrapper,
        (x,),
        buf,
        dynamo=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=axes if dynamic else None,
    )
    return onnx.load_from_string(buf.getvalue())


def export_onnx(
    model_or_run_dir: nn.Module | str | Path,
    out_path: str | Path,
    size: tuple[int, int] | None = None,
    opset: int = 18,
    dynamic: bool = True,
    *,
    in_channels: int | None = None,
    config: dict[str, Any] | None = None,
    checkpoint: str = "best",
    feedback_iters: int | None = None,
) -> Path:
    """Export ``logits`` of a model (or of a run folder's checkpoint) to ONNX, written atomically.

    Args:
        model_or_run_dir: an ``nn.Module`` returning :class:`~medseg.models.SegOutput`, or a run folder.
        out_path: the ``.onnx`` file.
        size: (H, W) of the example input used for tracing; with ``dynamic=False`` the only size the
            file accepts. Default: two strides (dynamic) or the run's training size / the model's
            default size (static).
        opset: ONNX opset.
        dynamic: free batch size and spatial size (multiples of the model's stride).
        in_channels, config: metadata for a bare model (a run folder provides both).
        checkpoint: which checkpoint of a run folder (``best``, ``last`` or a path).
        feedback_iters: forward passes unrolled into the graph (MGRAD-UNet test-time feedback);
            default: the run's ``eval.feedback_iters``, or 1 for a bare model.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as err:
        raise MedsegError(f"ONNX export needs the [export] extra (onnx, onnxscript, onnxruntime): {err}") from None

    from medseg.progress import progress_bar

    check_output_file(out_path)
    meta: dict[str, Any] = {"in_channels": in_channels, "config": config, "checkpoint": checkpoint}
    was_training = isinstance(model_or_run_dir, nn.Module) and model_or_run_dir.training
    with progress_bar("export: load", total=len(EXPORT_STAGES)) as bar:
        model = _resolve(model_or_run_dir, meta)
        bar.advance()
        try:
            return _export(model, out_path, size, opset, dynamic, meta, feedback_iters, bar=bar)
        finally:
            model.train(was_training)


#: What ``export_onnx``'s progress bar counts.
EXPORT_STAGES = ("load", "trace", "export", "write")


def _export(model: nn.Module, out_path: str | Path, size: tuple[int, int] | None, opset: int, dynamic: bool,
            meta: dict[str, Any], feedback_iters: int | None, bar: Any = None) -> Path:
    from medseg.progress import _Quiet

    bar = bar or _Quiet()
    bar.describe("export: trace")
    meta.pop("checkpoint", None)
    if feedback_iters is not None:
        meta["feedback_iters"] = feedback_iters
    stride = int(getattr(model, "stride", 32))
    if meta.get("in_channels") is None:
        raise MedsegError("export_onnx: cannot tell the model's input channels; pass in_channels=")
    c = int(meta["in_channels"])
    if size is None:
        if dynamic:
            size = (2 * stride, 2 * stride)
        else:
            size = meta.get("size") or _default_size(meta.get("medseg_model"))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # batch 2 in the example: torch.export specialises a dimension whose example size is 1
    x = torch.randn(2 if dynamic else 1, c, *size, device=device)
    feedback_iters = int(meta.get("feedback_iters") or 1)
    wrapper = LogitsOnly(model, feedback_iters).eval()
    with torch.no_grad():
        out_channels = int(wrapper(x).shape[1])
    meta["out_channels"] = meta.get("out_channels") or out_channels
    bar.advance()
    bar.describe("export: graph")
    try:
        proto = _dynamo_export(wrapper, x, stride, opset, dynamic)
        exporter = "dynamo"
    except Exception as err:  # noqa: BLE001 -- any exporter failure: try the legacy one
        _log.warning("dynamo ONNX export failed (%s: %s); trying the legacy exporter", type(err).__name__,
                     str(err).splitlines()[0] if str(err) else "")
        try:
            proto = _legacy_export(wrapper, x, opset, dynamic)
        except Exception as err2:
            raise MedsegError(f"ONNX export failed: {type(err2).__name__}: {str(err2).splitlines()[0]}") from err2
        exporter = "torchscript"
    bar.advance()
    bar.describe("export: write")

    from medseg._version import __version__

    props = {
        "medseg_model": str(meta.get("medseg_model") or ""),
        "in_channels": str(c),
        "out_channels": str(meta["out_channels"]),
        "stride": str(stride),
        "medseg_version": __version__,
        "medseg_exporter": exporter,
        "medseg_dynamic": "1" if dynamic else "0",
        "medseg_example_size": json.dumps(list(size)),
        "medseg_feedback_iters": str(feedback_iters),  # already unrolled in the graph: run it once
        "medseg_config": json.dumps(meta.get("config")) if meta.get("config") is not None else "",
    }
    for key in list(props):
        if not props[key]:
            del props[key]
    existing = {p.key for p in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            for p in proto.metadata_props:
                if p.key == key:
                    p.value = value
        else:
            proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()  # < 2 GiB for every medseg model: no external data needed
    out = atomic_write(out_path, lambda fh: fh.write(data))
    bar.advance()
    _log.info("exported %s (%s exporter, opset %d, %s) to %s", props.get("medseg_model", "model"), exporter, opset,
              "dynamic batch/H/W" if dynamic else f"static {size}", out)
    return out


def _default_size(name: str | None) -> tuple[int, int]:
    from medseg.models import get_entry

    try:
        return tuple(get_entry(name).default_size)  # type: ignore[arg-type, return-value]
    except (KeyError, TypeError):
        return (224, 224)
