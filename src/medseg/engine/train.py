"""``fit(config)``: train a model with Lightning into a run folder.

Run folder: ``config.yaml`` (resolved), ``checkpoints/{best,last}.ckpt``, ``metrics.csv``, ``tb/``
(TensorBoard), ``summary.json``, ``curves.png``, ``overlays/``. ``best`` is chosen on the
validation split only (never the test split), by ``trainer.val_metric`` (highest Dice or lowest loss);
``last`` is written at every epoch end and every ``trainer.checkpoint_every_n_steps`` steps, so an
interrupted run resumes close to where it stopped.

The run folder is created only once the config, the model and the data have passed their checks
(training sizes against the model's stride, the outputs the loss terms name): a mistake leaves nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, Timer
from lightning.pytorch.loggers import TensorBoardLogger

from medseg.config import Config, ConfigError, load_config, parse_override, save_config, validate
from medseg.engine.checkpoint import AtomicCheckpointIO, load_checkpoint
from medseg.engine.datamodule import SegDataModule, prepare_data_root
from medseg.engine.loggers import ResumableCSVLogger
from medseg.engine.predict import without_pretrained
from medseg.engine.safety import (
    DivergenceError,
    GracefulStop,
    RandomStates,
    RunCheckpoint,
    TrainingInterrupted,
    check_run_dir_free,
    claim_run_dir,
    is_ddp_worker,
    lock_run_dir,
)
from medseg.engine.task import SegTask, predict_labels
from medseg.models import count_parameters
from medseg.utils import DataError, MedsegError, atomic_write_text, remove_stale_temp_files

_log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Silence Lightning's banners, tips and the dataloader-worker advice; the CLI owns the screen."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning precision: ``auto`` = bf16/16-mixed on a GPU, fp32 on the CPU. A recipe's GPU setting
    (e.g. the official code's fp16 AMP) falls back to fp32 on the CPU, where fp16 autocast is not a speed-up.
    ``bf16-mixed`` runs on a CPU with native bf16 (avx512_bf16 / amx_bf16 flags) and falls back to fp32 with
    a note on one without (emulated bf16 is slower than fp32). ``auto`` stays fp32 on the CPU (a recipe opts in):
    on a quiet 2-core AVX512-BF16 EPYC one bf16-mixed step measured 1.46x (M2SNet) to 2.16x (U-Net) fp32's speed,
    but its effect on every recipe's accuracy is not measured (an earlier 0.24-1.08x was taken under CPU
    oversubscription, benchmarks/results/train_step_bf16.md)."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if precision == "auto":
        return ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if on_gpu else "32-true"
    if precision in ("16-mixed", "16", "16-true") and not on_gpu:
        _log.info("trainer.precision=%s is for GPUs: training in fp32 on the CPU", precision)
        return "32-true"
    if precision in ("bf16-mixed", "bf16") and not on_gpu:
        from medseg.engine.fast import bf16_supported

        if not bf16_supported("cpu"):
            _log.warning("trainer.precision=%s: this CPU has no avx512_bf16 / amx_bf16; training in fp32", precision)
            return "32-true"
        return "bf16-mixed"
    return precision


class EpochBar(RichProgressBar):
    """Lightning's rich bar with epochs counted from 1: a one-epoch run reads "Epoch 1/1" (Lightning's: "0/0")."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            text += f"/{self.trainer.max_epochs}"
        if len(self.validation_description) > len(text):  # as Lightning: no flicker between the two
            text = f"{text:{len(self.validation_description)}}"
        return text


class EpochLines(Callback):
    """Where no bar is drawn (stderr is not a terminal: a log file, a pipe), one line per epoch instead, e.g.
    ``epoch 3/14: 75 steps, train loss 0.512, val loss 0.498, val dice 0.8012 (12.3 s)``."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._validated = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._validated = time.perf_counter(), False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"{trainer.global_step} steps"] + [f"{label} {float(m[key]):.{digits}f}" for key, label, digits in (
            ("train/loss_epoch", "train loss", 3), ("val/loss", "val loss", 3), ("val/dice", "val dice", 4))
            if key in m and (self._validated or not key.startswith("val/"))]  # no stale values of an unvalidated epoch
        _log.info("epoch %d%s: %s (%.1f s)", trainer.current_epoch + 1, of, ", ".join(parts), time.perf_counter() - self._t0)


class History(Callback):
    """Per-epoch rows (train loss, validation loss and Dice per class, learning rate, epoch seconds), kept in
    ``summary.json``; logs ``train/lr`` and ``train/epoch_s`` to ``metrics.csv``; survives resume.

    Each row's ``epoch`` is the epoch's number counted from 1 and ``step`` the training steps (batches) done by
    its end, so the last row of a one-epoch run of two batches reads epoch 1, step 2.

    ``curves.png`` is drawn from ``metrics.csv`` when training ends (:func:`finish_run`); during training it
    is redrawn after an epoch of at least :attr:`REDRAW_S` seconds, where drawing (~0.4 s) costs < 5 %.
    """

    REDRAW_S = 10.0

    def __init__(self, run_dir: Path, metric: str = "dice") -> None:
        self.run_dir = run_dir
        self.metric = metric
        self.rows: list[dict[str, float]] = []
        self.start_step = 0  # global step this session started from (a resumed run: the checkpoint's)
        self._t0 = time.perf_counter()
        self._validated = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = int(trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._validated = time.perf_counter(), False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._t0  # training + this epoch's validation, as nnU-Net's epoch time
        lr = max((g["lr"] for opt in trainer.optimizers for g in opt.param_groups), default=float("nan"))
        pl_module.log("train/lr", float(lr), on_step=False, on_epoch=True)
        pl_module.log("train/epoch_s", seconds, on_step=False, on_epoch=True)
        m = trainer.callback_metrics
        row = {"epoch": float(trainer.current_epoch + 1), "step": float(trainer.global_step), "train/lr": float(lr),
               "train/epoch_s": round(seconds, 3)}
        for key, value in m.items():  # validation values only in an epoch that validated (they linger otherwise)
            if key == "train/loss_epoch" or (self._validated and key.startswith(("val/loss", "val/dice"))):
                row[key] = float(value)
        self.rows.append(row)
        if trainer.is_global_zero and seconds >= self.REDRAW_S:
            from medseg.engine.visualize import curves_figure, save_figure

            rows = [{**r, "epoch": r["epoch"] - 1} for r in self.rows]  # metrics.csv's 0-based epochs, as the figure reads
            save_figure(curves_figure(rows, self.metric, self.run_dir.name, getattr(pl_module, "class_names", None)),
                        self.run_dir / "curves.png")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


class Overlays(Callback):
    """At the end of training, save image | truth | prediction contour overlays of a few validation slices
    (title: case id and per-class Dice; legend: class names; see :mod:`medseg.engine.visualize`)."""

    def __init__(self, run_dir: Path, count: int) -> None:
        self.run_dir = run_dir
        self.count = count

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.count <= 0:
            return
        dm = trainer.datamodule
        ds = getattr(dm, "val_ds", None) or getattr(dm, "train_ds", None)
        if ds is None or len(ds) == 0:
            return
        from medseg.engine.visualize import overlay_panel, save_png

        was_training = pl_module.training
        pl_module.eval()
        idx = np.linspace(0, len(ds) - 1, min(self.count, len(ds))).round().astype(int)
        out_dir = self.run_dir / "overlays"
        for i in dict.fromkeys(idx.tolist()):
            s = ds[i]
            x = s["image"][None].to(pl_module.device)
            pred = predict_labels(pl_module.model(x).logits, pl_module.cfg.data.targets)[0].cpu().numpy()
            name = f"{s['case']}" + (f"_slice{s['slice']:03d}" if s.get("slice") is not None else "")
            panel = overlay_panel(s["image"].numpy(), s["label"].numpy(), pred, pl_module.num_classes,
                                  class_names=pl_module.class_names, case_id=name)
            save_png(panel, out_dir / f"{name}.png")
        pl_module.train(was_training)


class ValidationBudget(Callback):
    """Validate every n-th epoch, n chosen so validation stays under ``fraction`` of the training time.

    After each validation, n = ceil(validation seconds / (fraction x one epoch's training seconds)),
    never below ``trainer.check_val_every_n_epoch``; the last epoch is always validated. The chosen
    intervals are recorded in ``summary.json`` (``validation``).
    """

    def __init__(self, fraction: float, base_interval: int, max_epochs: int) -> None:
        self.fraction, self.base, self.max_epochs = fraction, base_interval, max_epochs
        self.interval = base_interval
        self._t0 = self._v0 = 0.0
        self._val = 0.0
        self.changes: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._val = time.perf_counter(), 0.0
        last = self.max_epochs > 0 and trainer.current_epoch == self.max_epochs - 1
        trainer.check_val_every_n_epoch = 1 if last else self.interval

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val = time.perf_counter() - self._v0
        train = max(1e-6, self._v0 - self._t0)
        interval = max(self.base, math.ceil(self._val / (self.fraction * train)))
        if interval != self.interval:
            self.changes.append({"epoch": trainer.current_epoch + 1, "every_n_epochs": interval,
                                 "val_s": round(self._val, 2), "train_epoch_s": round(train, 2)})
            self.interval = interval

    def state_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "changes": self.changes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.interval = int(state.get("interval", self.base))
        self.changes = list(state.get("changes", []))


#: How ``trainer.val_metric`` picks ``best.ckpt``: the highest Dice, the lowest loss.
VAL_METRIC_MODES = {"dice": "max", "loss": "min"}


def make_run_dir(cfg: Config, out: str | Path | None) -> Path:
    env = os.environ.get("MEDSEG_RUN_DIR")
    if env and os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP worker re-running the CLI: rank 0's folder
        return Path(env)
    if out:
        return Path(out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.name}-{stamp}"


def build_trainer(cfg: Config, run_dir: Path, has_val: bool, callbacks: list[Callback] | None = None,
                  resume_step: int | None = None) -> pl.Trainer:
    t = cfg.trainer
    ckdir = run_dir / "checkpoints"
    cbs: list[Callback] = [History(run_dir, t.val_metric), Overlays(run_dir, t.overlays), RandomStates(),
                           GracefulStop(ckdir / "last.ckpt", run_dir)]
    if has_val:
        cbs.append(
            RunCheckpoint(
                dirpath=ckdir,
                filename="best",
                monitor=f"val/{t.val_metric}",
                mode=VAL_METRIC_MODES[t.val_metric],
                save_weights_only=True,  # predict/evaluate/export need only the weights; --resume uses last.ckpt
                save_top_k=1,
                enable_version_counter=False,
                auto_insert_metric_name=False,
            )
        )
    # ``last`` at every epoch end (Lightning's ``save_last`` writes only when ``best`` improved) and every N steps
    cbs.append(RunCheckpoint(dirpath=ckdir, filename="last", save_top_k=1, save_on_train_epoch_end=True,
                             enable_version_counter=False))
    cbs.append(
        RunCheckpoint(
            dirpath=ckdir,
            filename="last",
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_top_k=1,
            enable_version_counter=False,
        )
    )
    if has_val and t.val_time_fraction:
        cbs.append(ValidationBudget(t.val_time_fraction, t.check_val_every_n_epoch, t.max_epochs))
    from medseg.progress import progress_enabled

    show_bar = t.progress and progress_enabled()  # a bar on a terminal; one line per epoch in logs and pipes
    if show_bar:
        cbs.append(EpochBar(leave=True))
    elif t.progress:
        cbs.append(EpochLines())
    cbs.extend(callbacks or [])
    manual = cfg.strategy.name == "feedback" and cfg.strategy.update == "per_pass"
    if manual and t.accumulate_grad_batches != 1:
        raise ConfigError("strategy feedback/per_pass steps after every pass: trainer.accumulate_grad_batches must be 1")
    return pl.Trainer(
        default_root_dir=str(run_dir),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time=_dt.timedelta(seconds=t.max_time_s) if t.max_time_s else None,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),  # type: ignore[arg-type]
        accumulate_grad_batches=1 if manual else t.accumulate_grad_batches,
        gradient_clip_val=None if manual else t.gradient_clip_val,
        gradient_clip_algorithm=None if manual else t.gradient_clip_algorithm,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches if has_val else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        logger=[
            ResumableCSVLogger(save_dir=str(run_dir), name="", version="", resume_step=resume_step),
            TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False),
        ],
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=show_bar,
        enable_model_summary=False,
    )


#: Keys ``--resume`` may change: how long to train and how to run, never what is trained.
RESUMABLE_KEYS = (
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time_s", "trainer.progress", "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps", "trainer.overlays", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy", "data.num_workers",
)


def fit(
    cfg: Config | None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train ``cfg`` into a new run folder, or continue the run in ``resume`` (then ``cfg`` is ignored).

    ``out`` must be new or empty unless ``overwrite`` (the old folder is moved aside, never deleted).
    ``overrides`` (``key=value``) apply to a resumed run's stored config: only :data:`RESUMABLE_KEYS`.
    ``callbacks``: extra Lightning callbacks (e.g. timers), added after medseg's own.
    """
    quiet_lightning()
    if resume is not None:
        run_dir = Path(resume)
        cfg, point = prepare_resume(run_dir, overrides or [])
    elif cfg is None:
        raise MedsegError("fit needs a config or a run folder to resume")
    else:
        run_dir = make_run_dir(cfg, out)
        if not is_ddp_worker():
            check_run_dir_free(run_dir, overwrite)  # fail at once; checked again when the folder is claimed
        point = None
    previous = os.environ.get("MEDSEG_RUN_DIR")
    os.environ["MEDSEG_RUN_DIR"] = str(run_dir)  # inherited by the DDP workers Lightning launches
    try:
        return _fit(cfg, run_dir, point, callbacks=callbacks,
                    overwrite=overwrite, resume_overrides=list(overrides or []) if resume is not None else [])
    finally:
        if previous is None:
            os.environ.pop("MEDSEG_RUN_DIR", None)
        else:
            os.environ["MEDSEG_RUN_DIR"] = previous


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resumed run continues from, read once: its step and weight shapes (rank 0 only)."""

    path: str
    step: int | None = None
    shapes: dict[str, tuple[int, ...]] | None = None


def prepare_resume(run_dir: Path, overrides: list[str]) -> tuple[Config, ResumePoint]:
    """The stored config (with the allowed ``overrides``) and the checked ``last.ckpt``; writes nothing."""
    if not (run_dir / "config.yaml").is_file():
        raise MedsegError(f"{run_dir}: not a run folder (no config.yaml)")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise MedsegError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt: it stopped before its first "
                          f"checkpoint); start it again with --out {run_dir} --overwrite")
    for item in overrides:
        key = ".".join(parse_override(item)[0])
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume: {key} cannot change in a resumed run (it would no longer be the run its "
                              f"checkpoints trained); keys that can: {', '.join(RESUMABLE_KEYS)}")
    cfg = load_config(str(run_dir / "config.yaml"), overrides)
    # the checkpoint holds every weight: do not download or read pretrained weights again
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kwargs": without_pretrained(cfg.model.kwargs)})})
    if is_ddp_worker():
        return cfg, ResumePoint(str(ckpt))
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "overlays"):  # curves.png, metrics, checkpoints...
        for tmp in remove_stale_temp_files(folder):  # a write the interruption cut off
            _log.info("removed the interrupted write %s", tmp)
    meta = load_checkpoint(ckpt)  # truncated, foreign or diverged: one line, nothing changed
    stored = meta["medseg"].get("model")
    if stored != cfg.model.name:
        raise MedsegError(f"{ckpt}: checkpoint of model {stored!r}, but {run_dir}/config.yaml trains {cfg.model.name!r}")
    try:  # epochs completed (Lightning's "epoch" is the 0-based epoch the checkpoint was taken in)
        done = int(meta["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        done = int(meta.get("epoch", 0))
    if cfg.trainer.max_epochs > 0 and cfg.trainer.max_epochs < done:
        raise ConfigError(f"--resume: trainer.max_epochs={cfg.trainer.max_epochs} is below the {done} epochs already trained")
    shapes = {k: tuple(v.shape) for k, v in meta["state_dict"].items()}
    return cfg, ResumePoint(str(ckpt), step=int(meta.get("global_step", 0)), shapes=shapes)


def check_checkpoint_fits(point: ResumePoint, task: SegTask) -> None:
    """The checkpoint's weights must match the model the config builds (names and shapes)."""
    if point.shapes is None:
        return
    own = task.state_dict()
    missing = [k for k in own if k not in point.shapes]
    wrong = [k for k in own if k in point.shapes and point.shapes[k] != tuple(own[k].shape)]
    if missing or wrong:
        k = (missing or wrong)[0]
        raise MedsegError(f"{point.path}: weights do not fit the run's model ({len(missing)} missing, {len(wrong)} "
                          f"with another shape; first: {k})")


def _fit(cfg: Config, run_dir: Path, point: ResumePoint | None,
         callbacks: list[Callback] | None = None, overwrite: bool = False,
         resume_overrides: list[str] | None = None) -> Path:
    resumed = point is not None
    # Every check (config, model, every data file) runs before the run folder is created or changed:
    # a mistake leaves nothing behind.
    cfg = cfg.model_copy(update={"data": prepare_data_root(cfg.data, default_root=Path("data"), model=cfg.model)})
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = SegTask(cfg)
    check_model_fits_config(cfg, task.model)
    if point is not None:
        check_checkpoint_fits(point, task)
    dm = SegDataModule(cfg, run_dir)
    dm.setup("fit")
    worker = is_ddp_worker()
    if not worker:
        problems = dm.preflight()
        if problems:
            more = f" (and {len(problems) - 1} more; `medseg data check` lists them all)" if len(problems) > 1 else ""
            raise DataError(problems[0] + more)
    trainer = build_trainer(cfg, run_dir, has_val=dm.val_ds is not None, callbacks=callbacks,
                            resume_step=point.step if point else None)
    if not worker:
        if resumed:
            lock_run_dir(run_dir)
        else:
            moved = claim_run_dir(run_dir, overwrite)
            if moved is not None:
                _log.warning("--overwrite: the folder that was at %s is now %s", run_dir, moved)
        if not resumed or resume_overrides:
            save_config(cfg, run_dir / "config.yaml")
    start = time.perf_counter()
    status, error = "completed", None
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=point.path if point else None)
    except (DivergenceError, TrainingInterrupted) as err:
        status, error = ("diverged" if isinstance(err, DivergenceError) else "interrupted"), str(err)
        raise
    finally:
        if trainer.is_global_zero and (status != "completed" or trainer.state.status.value == "finished"):
            stop = None if status != "completed" else time_guard_stop(cfg, trainer)
            write_train_summary(cfg, run_dir, trainer, task, time.perf_counter() - start, resumed=resumed,
                                status="stopped_early" if stop else status, note=error or stop,
                                resume_overrides=resume_overrides)
            finish_run(cfg, run_dir)
    return run_dir


def finish_run(cfg: Config, run_dir: Path) -> None:
    """``curves.png`` from the whole ``metrics.csv`` (a resumed run's earlier epochs included) and the run's
    ``README.md`` model card. A picture or card that fails is logged, never the end of a trained run."""
    from medseg.engine.model_card import write_model_card
    from medseg.engine.visualize import default_class_names, plot_curves

    names = default_class_names(cfg.data.num_classes, cfg.data.class_names)
    for what, work in (("curves.png", lambda: plot_curves(run_dir / "metrics.csv", run_dir / "curves.png",
                                                          cfg.trainer.val_metric, run_dir.name, names)),
                       ("README.md", lambda: write_model_card(run_dir))):
        try:
            work()
        except Exception as err:  # noqa: BLE001 - the checkpoints are the result; a figure is a convenience
            _log.warning("could not write %s: %s", run_dir / what, err)


def time_guard_stop(cfg: Config, trainer: pl.Trainer) -> str | None:
    """A sentence when ``trainer.max_time_s`` ended the run before its epochs / steps, else None.

    Lightning counts an epoch the Timer cut short as finished (measured: 16 of 16 epochs with 849 of 896 steps),
    so the test is the Timer's own: no training time left, with a plan of epochs or steps not reached in full.
    """
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    t = cfg.trainer
    if timer is None or not t.max_time_s or (t.max_epochs <= 0 and t.max_steps <= 0):
        return None  # no time guard, or the time is the plan
    remaining = timer.time_remaining("train")
    if remaining is None or remaining > 0:
        return None
    if t.max_steps > 0 and trainer.global_step >= t.max_steps:
        return None
    planned = _planned_steps(cfg, trainer)
    if t.max_steps <= 0 and planned is not None and trainer.global_step >= planned:
        return None
    of = f" of {planned}" if planned is not None else ""
    return (f"trainer.max_time_s={t.max_time_s:g} stopped the run after {trainer.global_step}{of} steps (in epoch "
            f"{max(1, trainer.current_epoch)} of {t.max_epochs}); raise or clear it to train the full plan")


def _planned_steps(cfg: Config, trainer: pl.Trainer) -> int | None:
    """Training steps of ``max_epochs`` full epochs; None where the batches per epoch are unknown."""
    batches = getattr(trainer, "num_training_batches", None)
    if cfg.trainer.max_epochs <= 0 or not isinstance(batches, int) or batches <= 0:
        return None
    return cfg.trainer.max_epochs * math.ceil(batches / cfg.trainer.accumulate_grad_batches)


def check_model_fits_config(cfg: Config, model: torch.nn.Module) -> None:
    """Fail before training when a training size or a loss term's output does not fit the model."""
    check_training_sizes(cfg, int(getattr(model, "stride", 1)))
    check_loss_outputs(cfg, model)


def check_training_sizes(cfg: Config, stride: int) -> None:
    """``data.size`` and every ``data.multiscale`` size must be multiples of the model's stride."""
    from medseg.layers.resize import size_hint

    d = cfg.data
    sizes = [("data.size", tuple(d.size))] + [("data.multiscale", (s, s)) for s in d.multiscale or []]
    for key, (h, w) in sizes:
        hint = size_hint(h, w, stride)
        if hint:
            raise ConfigError(f"{key}: {h}x{w} is not a multiple of model {cfg.model.name}'s stride {stride}; {hint}")


@torch.no_grad()
def check_loss_outputs(cfg: Config, model: torch.nn.Module) -> None:
    """Every ``aux/<name>`` a loss term names must be an output of the model (one eval forward on zeros)."""
    wanted = [(i, t.loss, o) for i, t in enumerate(cfg.loss.terms) for o in (t.outputs or [t.output])]
    if all(o == "logits" for _, _, o in wanted):
        return
    was_training = model.training
    model.eval()  # no batch-norm statistics are updated
    try:
        names = probe_output_names(model, cfg.data.in_channels, tuple(cfg.data.size))
    finally:
        model.train(was_training)
    for i, loss, o in wanted:
        if o not in names:
            raise ConfigError(f"loss.terms[{i}] ({loss}): model {cfg.model.name} has no output {o!r}; "
                              f"available: {', '.join(names)}")


def probe_output_names(model: torch.nn.Module, in_channels: int, size: tuple[int, int]) -> list[str]:
    """The model's output names (``logits``, ``aux/<name>``), from a forward at a small valid size.

    The names do not depend on the size; a forward at a paper's 512x512 takes ~20 s on a CPU.
    Architectures that need a larger input are probed at ``size`` (the training size).
    """
    stride = int(getattr(model, "stride", 1))
    small = stride * max(1, math.ceil(32 / stride))
    if small < min(size):
        try:
            return model(torch.zeros(1, in_channels, small, small)).names()
        except Exception:  # fall back to the size training will use
            pass
    return model(torch.zeros(1, in_channels, *size)).names()


def write_train_summary(cfg: Config, run_dir: Path, trainer: pl.Trainer, task: SegTask, seconds: float, resumed: bool,
                        status: str = "completed", note: str | None = None,
                        resume_overrides: list[str] | None = None) -> None:
    """``summary.json``: ``status`` is completed, stopped_early (a time guard), interrupted or diverged."""
    path = run_dir / "summary.json"
    try:
        prev = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        prev = {}
    best = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
    history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
    summary = {
        **prev,
        "recipe": cfg.name,
        "model": cfg.model.name,
        "params": count_parameters(task.model),
        "epochs": _epochs_done(trainer, history),
        "max_epochs": cfg.trainer.max_epochs,
        "steps": trainer.global_step,  # training steps = batches (MGRAD-UNet's 3 updates a batch count once)
        "start_step": history.start_step if history else 0,
        "train_seconds": round(prev.get("train_seconds", 0.0) + seconds, 2),
        "resumed": prev.get("resumed", 0) + int(resumed),
        "device": str(task.device),
        "val_metric": cfg.trainer.val_metric,
        "best_val": None if best is None or best.best_model_score is None else float(best.best_model_score),
        "best_checkpoint": None if best is None or not best.best_model_path else "checkpoints/best.ckpt",
        "history": history.rows if history else [],
        "checkpoint_bytes": {name: (run_dir / "checkpoints" / f"{name}.ckpt").stat().st_size
                             for name in ("best", "last") if (run_dir / "checkpoints" / f"{name}.ckpt").is_file()},
        "status": status,
        "note": note,
        "data_cache": getattr(trainer.datamodule, "cache_note", None),
        "data": {"train_cases": _case_count(trainer.datamodule, "train_ds"),
                 "val_cases": _case_count(trainer.datamodule, "val_ds")},
    }
    budget = next((c for c in trainer.callbacks if isinstance(c, ValidationBudget)), None)
    if budget is not None:
        summary["validation"] = {
            "rule": f"every {cfg.trainer.check_val_every_n_epoch} epoch(s), less often when validation exceeds "
                    f"{cfg.trainer.val_time_fraction:.0%} of the training time; the last epoch always",
            "changes": budget.changes,
        }
    if resume_overrides:
        summary["resume_overrides"] = prev.get("resume_overrides", []) + list(resume_overrides)
    atomic_write_text(path, json.dumps(summary, indent=2))


def _epochs_done(trainer: pl.Trainer, history: History | None) -> int:
    """Completed epochs. An interrupt between an epoch's end hooks and Lightning's epoch counter (measured: a
    SIGINT there gave 50 history rows and ``current_epoch`` 49) counts the epoch whose end was recorded."""
    recorded = int(history.rows[-1]["epoch"]) if history is not None and history.rows else 0
    return max(int(trainer.current_epoch), recorded)


def _case_count(dm: Any, attr: str) -> int:
    """Cases (not slices) of the data module's ``train_ds`` / ``val_ds``; 0 when there is none."""
    ds = getattr(dm, attr, None)
    return 0 if ds is None else len(getattr(ds, "ids", ds))


def fit_recipe(recipe: str = "quickstart", overrides: list[str] | None = None, out: str | Path | None = None) -> Path:
    return fit(load_config(recipe, overrides), out=out)


__all__ = ["fit", "fit_recipe", "validate"]
