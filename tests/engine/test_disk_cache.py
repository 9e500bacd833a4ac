"""data.cache=disk (and auto when memory is short): pre-transformed samples in MONAI PersistentDataset files."""

from __future__ import annotations

import pytest
import torch

from medseg.config import ConfigError, load_config
from medseg.engine.datamodule import SegDataModule, preprocessing_key
from tiny_runs import make_ct


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    return make_ct(tmp_path_factory, count=8)


def _dm(ct, tmp_path, *sets: str, run_dir=None) -> SegDataModule:
    cfg = load_config("quickstart", [f"data.root={ct}", "data.size=[32,32]", *sets])
    dm = SegDataModule(cfg, run_dir)
    dm.setup("fit")
    return dm


def test_disk_cache_writes_each_sample_once_and_reads_it_back_unchanged(ct, tmp_path, monkeypatch):
    dm = _dm(ct, tmp_path, "data.cache=disk", f"data.cache_dir={tmp_path / 'c'}")
    assert "data.cache=disk, on disk in" in dm.cache_note
    ds = dm.train_ds
    first = [ds._load_pre(*key) for key in ds.index]
    files = list((tmp_path / "c").rglob("*.pt"))
    assert len(files) == len(ds) and all(f.parent.name == preprocessing_key(dm.cfg.data) for f in files)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached on disk")

    monkeypatch.setattr(ds.reader, "load", no_decoding)
    monkeypatch.setattr(ds.reader, "load_slice", no_decoding)
    fresh = _dm(ct, tmp_path, "data.cache=disk", f"data.cache_dir={tmp_path / 'c'}").train_ds  # a later run
    monkeypatch.setattr(fresh.reader, "load", no_decoding)
    monkeypatch.setattr(fresh.reader, "load_slice", no_decoding)
    again = [fresh._load_pre(*key) for key in fresh.index]
    plain = _dm(ct, tmp_path, "data.cache=false").train_ds
    for a, b, key in zip(first, again, ds.index):
        ref = plain._load_pre(*key)
        assert torch.equal(a["image"], ref["image"]) and torch.equal(b["image"], ref["image"])
        assert torch.equal(b["label"], ref["label"])
    assert ds[(0, 0)]["image"].shape == plain[(0, 0)]["image"].shape  # augmentation runs on the cached sample


def test_auto_goes_to_disk_in_the_run_folder_when_memory_is_short(ct, tmp_path):
    dm = _dm(ct, tmp_path, "data.cache_memory_fraction=1e-9", run_dir=tmp_path / "run")
    assert "too large for 0% of it, on disk in " + str(tmp_path / "run" / "cache") in dm.cache_note
    assert not (tmp_path / "run").exists()  # nothing is written before training reads a sample
    dm.train_ds[(0, 0)]
    assert len(list((tmp_path / "run" / "cache").rglob("*.pt"))) == 1
    # without a run folder (medseg data check) auto still decodes at every step
    assert "decoded at every step" in _dm(ct, tmp_path, "data.cache_memory_fraction=1e-9").cache_note


def test_preprocessing_key_follows_what_shapes_a_sample_only(ct):
    key = lambda *s: preprocessing_key(load_config("quickstart", [f"data.root={ct}", *s]).data)  # noqa: E731
    assert key("data.size=[32,32]") != key("data.size=[64,64]")
    assert key("data.size=[32,32]") == key("data.size=[32,32]", "data.batch_size=3", "data.augment={preset: none}")


def test_disk_cache_without_a_folder_is_a_config_error(ct, tmp_path):
    with pytest.raises(ConfigError, match="data.cache=disk needs data.cache_dir"):
        _dm(ct, tmp_path, "data.cache=disk")
