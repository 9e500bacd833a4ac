"""The reader for a data config: one class per ``data.format`` (above :mod:`medseg.data.base` and the readers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medseg.data.base import Reader
from medseg.utils import DataError

if TYPE_CHECKING:
    from medseg.config import DataConfig


def _readers() -> dict[str, type[Reader]]:
    from medseg.data.image_folder import ImageFolderReader, PraNetReader
    from medseg.data.nnunet_raw import NnUNetRawReader
    from medseg.data.transunet import TransUNetReader

    return {
        "image_folder": ImageFolderReader,
        "pranet": PraNetReader,
        "transunet": TransUNetReader,
        "nnunet_raw": NnUNetRawReader,
    }


def build_reader(cfg: DataConfig) -> Reader:
    """The reader for ``cfg.format`` on ``cfg.root`` (a built-in data set must be generated first)."""
    if not cfg.root:
        raise DataError("data.root is not set: give a data folder (--data DIR) or a built-in data set")
    readers = _readers()
    if cfg.format not in readers:
        raise DataError(f"unknown data.format {cfg.format!r}; known: {', '.join(readers)}")
    reader = readers[cfg.format].from_config(cfg)
    if cfg.splits_file:  # a cross-validation fold: its train / val lists replace the data's own
        from medseg.data.splits import fold_splits

        reader.fold_splits = fold_splits(cfg.splits_file, cfg.fold, cfg.train_split, cfg.val_split)
    return reader
