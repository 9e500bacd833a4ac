"""The CSV logger keeps an interrupted run's rows on resume (Lightning's deletes metrics.csv)."""

import csv

from medseg.engine.loggers import ResumableCSVLogger, read_rows_before


def _write(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "step", "train/loss_step", "val/dice"])
        w.writeheader()
        w.writerows(rows)


def _read(path):
    with path.open(newline="") as fh:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]


def test_resume_keeps_rows_before_the_checkpoint_step(tmp_path):
    old = [{"epoch": 0, "step": s, "train/loss_step": 1.0 - s / 10} for s in range(8)]
    old.insert(4, {"epoch": 0, "step": 3, "val/dice": 0.5})
    _write(tmp_path / "metrics.csv", old)
    logger = ResumableCSVLogger(save_dir=str(tmp_path), name="", version="", resume_step=5)
    logger.log_metrics({"epoch": 1, "train/loss_step": 0.25}, step=5)
    logger.save()
    rows = _read(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "3", "4", "5"]  # 5..7 were lost with the interruption
    assert rows[4] == {"epoch": "0", "step": "3", "val/dice": "0.5"}
    assert rows[-1] == {"epoch": "1", "step": "5", "train/loss_step": "0.25"}


def test_fresh_run_starts_a_new_file(tmp_path):
    _write(tmp_path / "metrics.csv", [{"epoch": 0, "step": 0, "train/loss_step": 1.0}])
    logger = ResumableCSVLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"train/loss_step": 0.5}, step=0)
    logger.save()
    assert _read(tmp_path / "metrics.csv") == [{"step": "0", "train/loss_step": "0.5"}]


def test_read_rows_before_without_a_file(tmp_path):
    assert read_rows_before(str(tmp_path / "none.csv"), 3) == []
