"""Checkpoint metadata, atomic checkpoint writes, and safe loading (``weights_only=True``)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from medseg._version import __version__
from medseg.config import Config
from medseg.utils import MedsegError, atomic_save_torch


def medseg_metadata(cfg: Config) -> dict[str, Any]:
    """Everything :class:`~medseg.engine.predict.Predictor` needs: model name, kwargs, config, versions."""
    import lightning

    from medseg.models import resolved_kwargs

    return {
        "model": cfg.model.name,
        "model_kwargs": resolved_kwargs(cfg.model.name, dict(cfg.model.kwargs)),  # every keyword: see its doc
        "in_channels": cfg.data.in_channels,
        "out_channels": cfg.data.out_channels,
        "config": cfg.to_dict(),
        "versions": {
            "medseg": __version__,
            "torch": str(torch.__version__),
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
    }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temp file and renames it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        from medseg.engine.safety import DivergenceError, non_finite_tensors

        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:  # never let a diverged model become best.ckpt or last.ckpt
            raise DivergenceError(
                f"training diverged at epoch {int(checkpoint.get('epoch', 0)) + 1}, step {checkpoint.get('global_step', '?')}: "
                f"{len(bad)} weight tensor(s) are "
                f"non-finite (first: {bad[0]}); {Path(path).name} was not written, the earlier checkpoints are kept"
            )
        atomic_save_torch(checkpoint, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medseg checkpoint on CPU with ``weights_only=True`` and check it carries our metadata."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unsafe pickle
        raise MedsegError(f"{path}: cannot load checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "medseg" not in ckpt or "state_dict" not in ckpt:
        raise MedsegError(f"{path}: not a medseg checkpoint (no 'medseg' metadata)")
    from medseg.engine.safety import non_finite_tensors

    bad = non_finite_tensors(ckpt["state_dict"])
    if bad:
        raise MedsegError(f"{path}: {len(bad)} weight tensor(s) are non-finite (first: {bad[0]}); the run diverged")
    return ckpt


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own weights from a Lightning checkpoint (``model.`` prefix removed)."""
    sd = ckpt["state_dict"]
    return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
