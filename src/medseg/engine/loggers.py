"""A CSV logger that keeps an interrupted run's rows when the run is resumed.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it opens a folder that already has one, so a
``--resume`` would lose every row logged before the interruption. This one reads the old rows
first and writes back those logged before the checkpoint's step (later rows belong to the part of
the run the interruption lost and that the resumed run trains again). It also writes its rows to
disk whenever a checkpoint is saved, so every row a checkpoint covers is there to be kept.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def read_rows_before(path: str, step: int) -> list[dict[str, Any]]:
    """Rows of a metrics CSV whose ``step`` is below ``step``; empty cells are dropped."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = []
    for row in rows:
        try:
            if int(float(row.get("step") or 0)) >= step:
                continue
        except ValueError:
            continue
        kept.append({k: v for k, v in row.items() if k and v not in ("", None)})
    return kept


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, given ``resume_step``, carries over the rows logged before that step."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self) -> Any:
        if self._experiment is None and self._resume_step is not None:
            path = os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)
            old = read_rows_before(path, self._resume_step)
            writer = super().experiment  # deletes the old metrics.csv
            if isinstance(writer, ExperimentWriter) and old:
                writer.metrics = old + writer.metrics
            return writer
        return super().experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()
