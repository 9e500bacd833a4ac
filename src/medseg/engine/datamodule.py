"""Lightning DataModule: reader -> SliceDataset (+ MONAI transforms) -> DataLoaders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from medseg.config import Config, ConfigError, DataConfig, ModelConfig
from medseg.data.sampling import EpochSampler
from medseg.utils import DataError

_log = logging.getLogger(__name__)


def prepare_data_root(cfg: DataConfig, default_root: Path | None = None, model: ModelConfig | None = None) -> DataConfig:
    """Fill ``root`` for built-in data (generated once, cached by its parameters), check it exists, derive the
    ``auto`` values from the folder (:func:`medseg.data.derive.derive_data_settings`; ``model`` gives the stride
    and whether a pretrained backbone wants ImageNet normalisation), and record what predict/evaluate need about
    the inputs (``data.inputs``: :func:`medseg.data.inputs.record_inputs`)."""
    from medseg.data.derive import derive_data_settings
    from medseg.data.inputs import record_inputs

    if cfg.builtin:
        from medseg.data.builtin import generate

        root = Path(cfg.root) if cfg.root else (default_root or Path("data")) / f"{cfg.builtin}-seed{cfg.builtin_seed}"
        generate(cfg.builtin, root, seed=cfg.builtin_seed, count=cfg.builtin_count)
        return record_inputs(derive_data_settings(cfg.model_copy(update={"root": str(root)}), model))
    if not cfg.root:
        raise DataError("data.root is not set: pass --data DIR (or set data.builtin)")
    if not Path(cfg.root).exists():
        raise DataError(f"data folder not found: {cfg.root}")
    return record_inputs(derive_data_settings(cfg, model))


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def preprocessing_key(cfg: DataConfig) -> str:
    """A hash of everything that shapes a pre-transformed sample (data folder, reader, channels, classes, size,
    normalisation, input handling): the disk cache's files of one setting are never read by another."""
    import hashlib
    import json

    from medseg._version import __version__

    d = cfg.model_dump(mode="json")
    keep = {k: d[k] for k in ("format", "image_dir", "mask_dir", "in_channels", "num_classes", "size", "normalize",
                              "inputs", "targets", "class_names") if k in d}
    keep["root"] = str(Path(str(cfg.root)).resolve())
    keep["medseg"] = __version__
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def decide_cache(datasets: list, cfg: DataConfig, run_dir: Path | None = None) -> str:
    """Cache each dataset's pre-transformed samples in memory, on disk or not at all (``data.cache``: true,
    "disk", false or auto) and say why.

    The estimate is one pre-transformed sample's bytes times the samples, times the processes that each
    hold a copy (the main one and every DataLoader worker); ``auto`` caches in memory when that fits in
    ``cache_memory_fraction`` of the available memory, else on disk (``data.cache_dir``, default
    ``<run folder>/cache``; MONAI ``PersistentDataset``), else not at all.
    """
    n = sum(len(ds) for ds in datasets)
    if not n or cfg.cache is False:
        for ds in datasets:
            ds.cache = False
        return "cache: off (data.cache=false): samples are decoded at every step"
    folder = Path(cfg.cache_dir) if cfg.cache_dir else (Path(run_dir) / "cache" if run_dir is not None else None)
    if cfg.cache == "disk" and folder is None:
        raise ConfigError("data.cache=disk needs data.cache_dir (or a run folder)")
    probe = datasets[0]
    cid, k = probe.index[0]
    sample = probe._prepare(probe.reader.load_slice(cid, k) if k is not None else probe.reader.load(cid))
    per = sum(int(np.asarray(sample[key]).nbytes) for key in ("image", "label") if sample.get(key) is not None)
    copies = 1 + cfg.num_workers
    need, avail = per * n * copies, available_memory()
    fits = need <= cfg.cache_memory_fraction * avail
    what = f"cache: {n:,} samples x {per / 2**20:.2f} MB x {copies} process(es) = {need / 2**30:.2f} GB of {avail / 2**30:.1f} GB available"
    if cfg.cache == "disk" or (cfg.cache == "auto" and not fits and folder is not None):
        key = preprocessing_key(cfg)
        for ds in datasets:
            ds.use_disk_cache(folder / key, key)
        why = "data.cache=disk" if cfg.cache == "disk" else f"too large for {cfg.cache_memory_fraction:.0%} of it"
        return what + f": {why}, on disk in {folder / key} ({per * n / 2**30:.2f} GB, written during the first epoch)"
    on = cfg.cache is True or fits
    for ds in datasets:
        ds.cache = on
    if on:
        return what + (": in memory (forced)" if cfg.cache is True and not fits else ": in memory")
    return what + f": too large for {cfg.cache_memory_fraction:.0%} of it, decoded at every step (data.cache=true forces it)"


class SegDataModule(pl.LightningDataModule):
    def __init__(self, cfg: Config, run_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.run_dir = run_dir  # the disk cache's default home (<run folder>/cache)
        self.train_ds = None
        self.val_ds = None
        self.cache_note = ""

    def _dataset(self, split: str, train: bool, limit: int | None):
        from medseg.data.base import SliceDataset
        from medseg.data.readers import build_reader

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
            self.cache_note = decide_cache([ds for ds in (self.train_ds, self.val_ds) if ds is not None], d,
                                           self.run_dir)
            _log.info("%s", self.cache_note)

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
        from medseg.data.samples import collate_samples

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
        from medseg.data.samples import collate_samples

        d = self.cfg.data
        return DataLoader(self.val_ds, batch_size=self.cfg.eval.batch_size, shuffle=False, num_workers=d.num_workers,
                          collate_fn=collate_samples)
