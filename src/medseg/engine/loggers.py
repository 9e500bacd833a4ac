"""A CSV logger that keeps an interrupted run's rows when the run is resumed.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it opens a folder that already has one, so a
``--resume`` would lose every row logged before the interruption. This one leaves the file alone
until the resumed run logs its first row, then keeps the rows logged before the checkpoint's step (later rows belong to the part of
the run the interruption lost and that the resumed run trains again). It also writes its rows to
disk whenever a checkpoint is saved, so every row a checkpoint covers is there to be kept.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from medseg.utils import atomic_write_text


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


class _KeepingWriter(ExperimentWriter):
    """Never deletes ``metrics.csv`` when opened; the first save replaces it (atomically) by the rows logged
    before ``keep_before`` (none for a new run), so a resume that fails before logging changes nothing."""

    def __init__(self, log_dir: str, keep_before: int | None) -> None:
        self._keep_before = keep_before
        self._started = False
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here
        pass

    def save(self) -> None:
        if not self._started and self.metrics:
            self._started = True
            old = read_rows_before(self.metrics_file_path, self._keep_before) if self._keep_before is not None else []
            keys = sorted(set().union(*old)) if old else []
            buf = io.StringIO()
            if old:
                writer = csv.DictWriter(buf, fieldnames=keys)
                writer.writeheader()
                writer.writerows(old)
                atomic_write_text(self.metrics_file_path, buf.getvalue())
            elif os.path.isfile(self.metrics_file_path):
                os.remove(self.metrics_file_path)
            self.metrics_keys = keys
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, given ``resume_step``, carries over the rows logged before that step."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, keep_before=self._resume_step)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()
