"""Cross-validation folds (splits_final.json): seeded, disjoint, covering, grouped; groups files; CV pools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import partition_dataset
from PIL import Image

from medseg.config import DataConfig
from medseg.data.readers import build_reader
from medseg.data.splits import (
    case_groups,
    check_folds,
    default_group,
    fold_splits,
    make_folds,
    read_groups,
    read_splits,
    write_splits,
)
from medseg.utils import DataError

# ACDC-style slices: 6 patients x 2 frames x 3 slices
ACDC = [f"patient{p:03d}_frame{f:02d}_slice_{s}" for p in range(1, 7) for f in (1, 12) for s in range(1, 4)]


def _check_partition(folds, ids):
    vals = [set(f["val"]) for f in folds]
    assert sorted(c for v in vals for c in v) == sorted(ids)  # covering, each case once
    for f in folds:
        assert not set(f["train"]) & set(f["val"])  # disjoint within a fold
        assert sorted(f["train"] + f["val"]) == sorted(ids)


def test_folds_are_deterministic_disjoint_covering():
    ids = [f"c{i:02d}" for i in range(11)]
    folds = make_folds(ids, 3, seed=5)
    assert folds == make_folds(list(reversed(ids)), 3, seed=5)  # same seed, any input order: same folds
    assert folds != make_folds(ids, 3, seed=6)
    _check_partition(folds, ids)
    assert sorted(len(f["val"]) for f in folds) == [3, 4, 4]
    # fold i's val is MONAI's partition i of the seeded shuffle (one case per group)
    parts = partition_dataset(sorted(ids), num_partitions=3, shuffle=True, seed=5)
    assert [f["val"] for f in folds] == [sorted(p) for p in parts]


def test_folds_keep_each_patient_in_one_fold():
    groups = {c: default_group(c) for c in ACDC}
    assert groups["patient003_frame12_slice_2"] == "patient003"
    folds = make_folds(ACDC, 3, seed=0, groups=groups)
    _check_partition(folds, ACDC)
    for f in folds:
        val_patients = {groups[c] for c in f["val"]}
        assert len(val_patients) == 2  # 6 patients dealt into 3 folds
        assert not val_patients & {groups[c] for c in f["train"]}  # no patient on both sides
        assert len(f["val"]) == 12  # every slice of both frames of those patients


def test_default_group_rules():
    assert default_group("case0005_slice012") == "case0005"  # Synapse slices -> volume
    assert default_group("patient001_frame01") == "patient001"  # ACDC volume / nnU-Net case -> patient
    assert default_group("video3_frame012") == "video3"
    assert default_group("phantom_005") == "phantom_005"
    assert default_group("ct_0001") == "ct_0001"


def test_too_few_groups_and_too_few_folds():
    with pytest.raises(DataError, match="2 group"):
        make_folds(ACDC[:12], 3, seed=0, groups={c: default_group(c) for c in ACDC[:12]})
    with pytest.raises(DataError, match="at least 2 folds"):
        make_folds(ACDC, 1, seed=0)


def test_groups_files(tmp_path):
    (tmp_path / "groups.txt").write_text("# case group\na p1\nb p1  # same patient\n\nc p2\n")
    (tmp_path / "groups.json").write_text(json.dumps({"a": "p1", "b": 1}))
    assert read_groups(tmp_path / "groups.txt") == {"a": "p1", "b": "p1", "c": "p2"}
    assert read_groups(tmp_path / "groups.json") == {"a": "p1", "b": "1"}
    (tmp_path / "bad.txt").write_text("a p1 extra\n")
    with pytest.raises(DataError, match=r"bad.txt: line 1"):
        read_groups(tmp_path / "bad.txt")
    with pytest.raises(DataError, match=r"groups.txt: no group for case 'd'"):
        case_groups(["a", "d"], tmp_path / "groups.txt")
    groups, how = case_groups(["a", "b", "c"], tmp_path / "groups.txt")
    assert groups == {"a": "p1", "b": "p1", "c": "p2"} and "groups file" in how
    folds = make_folds(["a", "b", "c"], 2, seed=0, groups=groups)
    assert sorted(sorted(f["val"]) for f in folds) == [["a", "b"], ["c"]]


def test_splits_file_round_trip_and_checks(tmp_path):
    folds = make_folds(ACDC, 2, seed=1, groups={c: default_group(c) for c in ACDC})
    p = write_splits(tmp_path / "splits_final.json", folds)
    assert json.loads(p.read_text()) == folds  # nnU-Net's plain list of {"train", "val"}
    assert read_splits(p) == folds
    assert fold_splits(p, 1, "train", None) == {"train": folds[1]["train"], "val": folds[1]["val"]}
    with pytest.raises(DataError, match="has 2 folds; fold 2"):
        fold_splits(p, 2, "train", "val")
    with pytest.raises(DataError, match="both train and val"):
        check_folds([{"train": ["a"], "val": ["a"]}], "x.json")
    with pytest.raises(DataError, match="val list of folds 0 and 1"):
        check_folds([{"train": ["b"], "val": ["a"]}, {"train": [], "val": ["a"]}], "x.json")
    with pytest.raises(DataError, match="list of folds"):
        check_folds({"train": []}, "x.json")


def _images(root: Path, ids: list[str], splits: dict[str, list[str]] | None = None) -> Path:
    for cid in ids:
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / sub / f"{cid}.png")
    for name, lst in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{name}.txt").write_text("\n".join(lst) + "\n")
    return root


def test_cv_pool_undoes_the_carve_out_and_leaves_test_alone(tmp_path):
    ids = [f"v{i}_slice_{s}" for i in range(5) for s in range(2)]
    root = _images(tmp_path / "a", ids + ["t0", "t1"], {"train": ids, "test": ["t0", "t1"]})
    reader = build_reader(DataConfig(root=str(root), val_fraction=0.2))
    assert len(reader.ids("val")) == 2 and len(reader.ids("train")) == 8  # the carve-out
    assert sorted(reader.cv_pool()) == sorted(ids)
    # no split files: the seeded train + val, never the seeded test
    root = _images(tmp_path / "b", ids)
    reader = build_reader(DataConfig(root=str(root)))
    assert sorted(reader.cv_pool()) == sorted(reader.ids("train") + reader.ids("val"))
    assert not set(reader.cv_pool()) & set(reader.ids("test"))


def test_a_fold_replaces_train_and_val_only(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    root = _images(tmp_path / "d", ids + ["t0"], {"train": ids, "test": ["t0"]})
    folds = make_folds(ids, 3, seed=0)
    p = write_splits(tmp_path / "splits_final.json", folds)
    reader = build_reader(DataConfig(root=str(root), splits_file=str(p), fold=2))
    assert reader.ids("train") == folds[2]["train"] and reader.ids("val") == folds[2]["val"]
    assert reader.ids("test") == ["t0"]
