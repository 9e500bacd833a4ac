"""Run safety: owned run folders, divergence stops, exact resume, graceful interruption.

- :func:`claim_run_dir`: a run folder belongs to one run. A new run refuses a folder that already
  holds files (``--overwrite`` moves the old one aside, never deletes it), and an exclusive lock
  (``fcntl.flock`` on ``.lock``, released by the OS when the process ends, even on ``kill -9``) stops
  a second process from writing the same run.
- :class:`DivergenceError`: raised on a non-finite loss or gradient, and by the checkpoint writer when
  the weights are non-finite, so no such checkpoint is ever written.
- :class:`RandomStates`: the global torch / numpy / python (and CUDA) random states in every
  checkpoint, restored when the resumed run starts. With :mod:`medseg.data.sampling` (order and
  augmentation by (seed, epoch, index)) a resumed run trains exactly as the uninterrupted one.
- :class:`RunCheckpoint`: ``ModelCheckpoint`` that keeps the best score of a run folder that was
  moved or renamed (Lightning drops it when the stored folder path differs).
- :class:`GracefulStop`: SIGINT / SIGTERM finish the current step, write ``last.ckpt`` and stop with
  :class:`TrainingInterrupted`; a second signal stops at once.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from medseg.utils import MedsegError

LOCK_NAME = ".lock"
_held_locks: dict[str, int] = {}  # run folder -> file descriptor, held for the life of the process


class RunFolderError(MedsegError):
    """The run folder cannot be used (it holds another run, or another process writes it)."""


class DivergenceError(MedsegError):
    """Training produced a non-finite loss, gradient or weight; the run stops without a bad checkpoint."""


class TrainingInterrupted(MedsegError):
    """SIGINT / SIGTERM stopped training after ``last.ckpt`` was written; ``exit_code`` is 130 / 143."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def is_ddp_worker() -> bool:
    """True in a DDP process Lightning launched for a rank other than 0 (it writes into rank 0's folder)."""
    return bool(os.environ.get("MEDSEG_RUN_DIR")) and os.environ.get("LOCAL_RANK", "0") != "0"


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME) if folder.is_dir() else []


def check_run_dir_free(run_dir: Path, overwrite: bool = False) -> None:
    """Fail (one line) when ``run_dir`` already holds files and ``overwrite`` is not given."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder; choose another --out")
    if not run_dir.exists():
        parent = next(p for p in run_dir.absolute().parents if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise RunFolderError(f"{run_dir}: cannot create the run folder ({parent} is not writable)")
    entries = _entries(run_dir)
    if not entries or overwrite:
        return
    what = "a run" if "config.yaml" in entries else f"{len(entries)} file(s) that are not a medseg run"
    raise RunFolderError(
        f"{run_dir}: already holds {what}; continue it with --resume {run_dir}, choose another --out, "
        f"or pass --overwrite (the old folder is moved aside, not deleted)"
    )


def move_aside(run_dir: Path) -> Path:
    """Rename ``run_dir`` to ``<name>.replaced-<time>`` next to it (never deletes anything)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    run_dir.rename(target)
    return target


def lock_run_dir(run_dir: Path) -> None:
    """Hold an exclusive lock on ``run_dir`` until the process ends; fail if another process holds it."""
    import fcntl

    key = str(run_dir.resolve())
    if key in _held_locks:
        return
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunFolderError(f"{run_dir}: in use by another medseg process (pid {holder}); wait for it to end") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_locks[key] = fd


def release_run_dir(run_dir: Path) -> None:
    """Release the lock taken by :func:`lock_run_dir` (the OS also releases it when the process ends)."""
    fd = _held_locks.pop(str(run_dir.resolve()), None)
    if fd is not None:
        os.close(fd)


def claim_run_dir(run_dir: Path, overwrite: bool = False) -> Path | None:
    """Create and lock a new run folder; returns where an old folder was moved by ``overwrite``."""
    check_run_dir_free(run_dir, overwrite)
    try:
        moved = move_aside(run_dir) if overwrite and _entries(run_dir) else None
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run_dir(run_dir)
    except OSError as err:
        raise RunFolderError(f"{run_dir}: cannot create the run folder ({err.strerror or err})") from None
    if _entries(run_dir):  # another process filled it between the check and the lock
        release_run_dir(run_dir)
        check_run_dir_free(run_dir)
    return moved


# ------------------------------------------------------------------------------------ divergence
def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state`` holding NaN or Inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite_loss(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step}: the loss is {float(loss.detach().float().mean())}; "
            "lower optim.lr or set trainer.gradient_clip_val (checkpoints before this step are kept)"
        )


def check_finite_grads(module: torch.nn.Module, epoch: int, step: int) -> None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if not math.isfinite(float(norm)):
        bad = next(n for n, p in module.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all()))
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step}: non-finite gradient (first in {bad}); "
            "lower optim.lr or set trainer.gradient_clip_val (checkpoints before this step are kept)"
        )


# -------------------------------------------------------------------------------- random states
class RandomStates(Callback):
    """Global random states in every checkpoint; restored when a resumed run starts training."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        s, self._pending = self._pending, None
        if not s:
            return
        torch.set_rng_state(s["torch"])
        n = s["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        version, internal, gauss = s["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose best score survives a moved or renamed run folder.

    Lightning keeps ``best_model_score`` only when the stored ``dirpath`` equals the current one; a run
    copied elsewhere then overwrote its best.ckpt with a worse one. The stored paths are re-rooted here.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        # A step checkpoint taken at an epoch's last batch (before validation and the epoch-end checkpoint)
        # makes Lightning 2.6 resume with its epoch counters one behind, so the next resume re-runs part
        # of an epoch; the epoch-end checkpoint follows moments later, so that step is skipped.
        if self._every_n_train_steps and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        old = state.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def moved(p: Any) -> Any:
                return os.path.join(self.dirpath, os.path.basename(p)) if isinstance(p, str) and p else p

            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state:
                    state[key] = moved(state[key])
            if isinstance(state.get("best_k_models"), dict):
                state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
            state["dirpath"] = self.dirpath
        super().load_state_dict(state)


# ---------------------------------------------------------------------------------- interruption
class GracefulStop(Callback):
    """SIGINT / SIGTERM: finish the step, write ``last.ckpt``, raise :class:`TrainingInterrupted`."""

    def __init__(self, last_path: Path, run_dir: Path) -> None:
        self.last_path = last_path
        self.run_dir = run_dir
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop now, without a new checkpoint
            self._restore()
            raise TrainingInterrupted(
                f"{signal.Signals(signum).name} twice: stopped at once; checkpoints/last.ckpt is the latest one "
                f"written before; continue with: medseg train --resume {self.run_dir}",
                signum,
            )
        self.signum = signum

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return  # DDP keeps Lightning's own handling
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.signum is not None and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop(trainer)  # (at an epoch's last batch: at the epoch's end, see RunCheckpoint)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signum is not None:
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.last_path)
        self._restore()
        name = signal.Signals(self.signum).name
        raise TrainingInterrupted(
            f"{name}: stopped at epoch {trainer.current_epoch + 1}, step {trainer.global_step}; "
            f"checkpoints/last.ckpt written; continue with: medseg train --resume {self.run_dir}",
            self.signum,
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
