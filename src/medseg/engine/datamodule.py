"""Lightning DataModule: reader -> SliceDataset (+ MONAI transforms) -> DataLoaders."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from medseg.config import Config, DataConfig
from medseg.data.sampling import EpochSampler
from medseg.utils import DataError

_log = logging.getLogger(__name__)


def prepare_data_root(cfg: DataConfig, default_root: Path | None = None) -> DataConfig:
    """Fill ``root`` for built-in data (generated once, cached by its parameters), check it exists, and
    record what predict/evaluate need about the inputs (``data.inputs``: :func:`medseg.data.inputs.record_inputs`)."""
    from medseg.data.inputs import record_inputs

    if cfg.builtin:
        from medseg.data.builtin import generate

        root = Path(cfg.root) if cfg.root else (default_root or Path("data")) / f"{cfg.builtin}-seed{cfg.builtin_seed}"
        generate(cfg.builtin, root, seed=cfg.builtin_seed, count=cfg.builtin_count)
        return record_inputs(cfg.model_copy(update={"root": str(root)}))
    if not cfg.root:
        raise DataError("data.root is not set: pass --data DIR (or set data.builtin)")
    if not Path(cfg.root).exists():
        raise DataError(f"data folder not found: {cfg.root}")
    return record_inputs(cfg)


class SegDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_ds = None
        self.val_ds = None

    def _dataset(self, split: str, train: bool, limit: int | None):
        from medseg.data.base import SliceDataset, build_reader

        d = self.cfg.data
        reader = build_reader(d)
        ids = reader.ids(split)
        if limit is not None:
            ids = ids[:limit]
        if not ids:
            raise DataError(f"{d.root}: split {split!r} is empty")
        return SliceDataset.from_config(reader, ids, d, train=train, seed=self.cfg.seed)

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if self.train_ds is None:
            self.train_ds = self._dataset(d.train_split, True, d.max_train_cases)
        if self.val_ds is None and d.val_split:
            self.val_ds = self._dataset(d.val_split, False, d.max_val_cases)

    def preflight(self) -> list[str]:
        """Read every training and validation case once (filling the cache where it is on): one line per bad file."""
        problems: list[str] = []
        for ds in (self.train_ds, self.val_ds):
            if ds is not None:
                problems += ds.check_cases()
        return problems

    def train_dataloader(self) -> DataLoader:
        from medseg.data.transforms import MultiScaleCollate

        d = self.cfg.data
        from medseg.data.base import collate_samples

        collate = MultiScaleCollate(d.multiscale, seed=self.cfg.seed) if d.multiscale else collate_samples
        return DataLoader(
            self.train_ds,
            batch_size=d.batch_size,
            sampler=self._train_sampler(),
            drop_last=len(self.train_ds) > d.batch_size,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            collate_fn=collate,
            # worker seeds from their own stream, so iterating the loader draws nothing from torch's global RNG
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _train_sampler(self) -> EpochSampler:
        """Order and augmentation by (seed, epoch, index); a resumed run starts where its checkpoint was."""
        trainer = self.trainer
        epoch = skip = 0
        replicas, rank = 1, 0
        if trainer is not None:
            replicas, rank = trainer.world_size, trainer.global_rank
            ep = trainer.fit_loop.epoch_progress.total
            epoch = ep.processed  # the epoch under way (a checkpoint taken mid-epoch) or the next one
            if ep.started == ep.ready and ep.processed == ep.started - 1:  # resumed mid-epoch
                skip = trainer.fit_loop.epoch_loop.batch_progress.current.processed * self.cfg.data.batch_size
        return EpochSampler(self.train_ds, seed=self.cfg.seed, num_replicas=replicas, rank=rank, epoch=epoch, skip=skip)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_ds is None:
            return []
        from medseg.data.base import collate_samples

        d = self.cfg.data
        return DataLoader(self.val_ds, batch_size=self.cfg.eval.batch_size, shuffle=False, num_workers=d.num_workers,
                          collate_fn=collate_samples)
