"""Training order and augmentation as functions of (seed, epoch, index): the basis of exact resume."""

from __future__ import annotations

import pytest
import torch

from medseg.config import load_config
from medseg.data.base import SliceDataset
from medseg.data.builtin import generate
from medseg.data.readers import build_reader
from medseg.data.sampling import EpochSampler, SampleKey, sample_seed
from medseg.data.transforms import MultiScaleCollate


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    data = list(range(10))
    a, b = EpochSampler(data, seed=3), EpochSampler(data, seed=3)
    b.set_epoch(5)
    b.set_epoch(0)  # going back reproduces the order: nothing is carried between epochs
    first = list(a)
    assert first == list(b) and all(isinstance(k, SampleKey) and k.epoch == 0 for k in first)
    assert sorted(k.index for k in first) == data
    a.set_epoch(1)
    assert [k.index for k in a] != [k.index for k in first]
    assert [k.index for k in EpochSampler(data, seed=4)] != [k.index for k in first]


def test_epoch_sampler_skips_the_trained_part_of_the_checkpoint_epoch_only():
    data = list(range(12))
    full = [k.index for k in EpochSampler(data, seed=0, epoch=2)]
    s = EpochSampler(data, seed=0, epoch=2, skip=8)
    s.set_epoch(2)  # Lightning sets the same epoch again: the skip stays
    assert [k.index for k in s] == full[8:]
    assert [k.index for k in s] == full  # the next iteration of the same epoch is whole
    t = EpochSampler(data, seed=0, epoch=2, skip=8)
    t.set_epoch(3)  # another epoch: no skip
    assert len(list(t)) == 12


def test_epoch_sampler_shards_disjointly():
    data = list(range(10))
    shards = [[k.index for k in EpochSampler(data, seed=0, num_replicas=2, rank=r)] for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 5


def test_sample_seed_is_a_pure_function():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(0, e, i) for e in range(5) for i in range(50)}) == 250


@pytest.mark.parametrize("augment", ["{preset: basic, flip: true, vflip: true, rot90: true, rotate_deg: 15}",
                                     "{preset: transunet}"])
def test_augmentation_is_a_function_of_the_key(augment, tmp_path):
    root = generate("phantom-ct", tmp_path / "ct", seed=1, count=12, size=48, volumes=0)
    cfg = load_config("quickstart", [f"data.root={root}", "data.builtin=null", "data.size=[48,48]",
                                     f"data.augment={augment}"])
    reader = build_reader(cfg.data)
    ds = SliceDataset.from_config(reader, reader.ids("train"), cfg.data, train=True)
    other = SliceDataset.from_config(reader, reader.ids("train"), cfg.data, train=True, seed=0)
    n = len(ds)
    order = [(3, i) for i in range(n)]
    first = [ds[k]["image"] for k in order]
    again = [other[k]["image"] for k in reversed(order)][::-1]  # another dataset, another access order
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(not torch.equal(ds[(4, i)]["image"], first[i]) for i in range(n)) >= n // 2
    assert all(ds[k]["draw"] == sample_seed(0, *k) for k in order)


def test_multiscale_size_follows_the_batch_draw():
    collate = MultiScaleCollate([32, 48, 64], seed=0)
    batch = [{"image": torch.zeros(1, 48, 48), "label": torch.zeros(48, 48, dtype=torch.long), "draw": d}
             for d in (11, 12)]
    sizes = [collate(batch)["image"].shape[-1] for _ in range(5)]
    assert len(set(sizes)) == 1  # the same first draw always gives the same size
    assert len({collate([dict(batch[0], draw=d)])["image"].shape[-1] for d in range(40)}) == 3
