"""Cross-validation folds in nnU-Net's ``splits_final.json`` format, and the groups that keep a patient in one fold.

``splits_final.json`` is nnU-Net v2's file: a JSON list with one entry per fold,
``[{"train": [case ids], "val": [case ids]}, ...]``. :func:`make_folds` writes folds that are seeded
(same ids, groups, K and seed -> the same folds), disjoint (each case is in exactly one fold's ``val``
and never in its own fold's ``train``), covering (the ``val`` lists together are every case) and
grouped (all cases of one group -- patient, volume, video -- are in the same fold's ``val``).

Groups, first found:

1. a groups file: ``groups.json`` (an object ``{"<case id>": "<group>", ...}``) or ``groups.txt``
   (lines ``<case id> <group>``, whitespace-separated; blank lines and ``#`` comments skipped), in
   the data folder or given explicitly (``medseg train --groups FILE``); it must name every case;
2. the reader's key (:meth:`medseg.data.base.Reader.group_of`): the case id without a trailing
   ``_slice<N>`` / ``_slice_<N>`` and then ``_frame<N>``, so ACDC ``patient001_frame01_slice_3``
   belongs to ``patient001``, Synapse ``case0005_slice012`` to ``case0005``, a video frame
   ``video3_frame012`` to ``video3``; any other id (an nnU-Net case, a PNG) is its own group.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from medseg.utils import DataError, atomic_write_text

SPLITS_FILE = "splits_final.json"
GROUPS_FILES = ("groups.json", "groups.txt")
_SLICE_RE = re.compile(r"_slice_?\d+$")
_FRAME_RE = re.compile(r"_frame_?\d+$")

Folds = list[dict[str, list[str]]]


def default_group(case_id: str) -> str:
    """The patient / volume / video of a case id (see the module docstring); else the id itself."""
    return _FRAME_RE.sub("", _SLICE_RE.sub("", case_id)) or case_id


def make_folds(ids: Sequence[str], k: int, seed: int, groups: Mapping[str, str] | None = None) -> Folds:
    """``k`` folds of ``ids``, grouped by ``groups`` (case id -> group; missing: the id itself).

    The sorted unique groups are shuffled (seeded) and dealt into ``k`` parts by MONAI's
    ``partition_dataset``; fold ``i`` validates on the cases of part ``i`` and trains on the rest.
    The parts hold equal numbers of *groups* (within one), not of cases: sklearn's GroupKFold balances
    case counts instead, but it is not a medseg dependency and is not seeded.
    """
    from monai.data import partition_dataset

    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    cases = sorted(set(ids))
    group_of = {c: str((groups or {}).get(c, c)) for c in cases}
    names = sorted(set(group_of.values()))
    if len(names) < k:
        raise DataError(f"{len(cases)} cases in {len(names)} group(s) cannot make {k} folds: each fold needs a group")
    parts = partition_dataset(names, num_partitions=k, shuffle=True, seed=seed)
    folds: Folds = []
    for part in parts:
        held = set(part)
        folds.append({"train": [c for c in cases if group_of[c] not in held],
                      "val": [c for c in cases if group_of[c] in held]})
    return folds


def check_folds(folds: object, source: str | Path) -> Folds:
    """``folds`` as read from ``source``, checked: a list of ``{"train": [...], "val": [...]}`` with no case in
    both lists of a fold and no case in two folds' ``val`` (out-of-fold predictions need one model per case)."""
    if not isinstance(folds, list) or not folds:
        raise DataError(f"{source}: expected a list of folds [{{\"train\": [...], \"val\": [...]}}, ...] (nnU-Net format)")
    seen: dict[str, int] = {}
    out: Folds = []
    for i, f in enumerate(folds):
        if not isinstance(f, dict) or not all(isinstance(f.get(key), list) for key in ("train", "val")):
            raise DataError(f"{source}: fold {i} is not {{\"train\": [case ids], \"val\": [case ids]}}")
        train, val = [str(c) for c in f["train"]], [str(c) for c in f["val"]]
        both = set(train) & set(val)
        if both:
            raise DataError(f"{source}: fold {i} has case {sorted(both)[0]!r} in both train and val")
        for c in val:
            if c in seen:
                raise DataError(f"{source}: case {c!r} is in the val list of folds {seen[c]} and {i}")
            seen[c] = i
        out.append({"train": train, "val": val})
    return out


def read_splits(path: str | Path) -> Folds:
    """The checked folds of a ``splits_final.json`` (:func:`check_folds`); one-line errors naming the file."""
    path = Path(path)
    try:
        data = json.loads(os.fsdecode(path.read_bytes()))
    except FileNotFoundError:
        raise DataError(f"{path}: splits file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    return check_folds(data, path)


def write_splits(path: str | Path, folds: Folds) -> Path:
    """Write ``folds`` as nnU-Net's ``splits_final.json`` (atomically)."""
    return atomic_write_text(path, json.dumps(folds, indent=1) + "\n")


def fold_splits(path: str | Path, fold: int, train_split: str, val_split: str | None) -> dict[str, list[str]]:
    """``{train_split: fold's train, val_split (or "val"): fold's val}`` of fold ``fold`` of ``path``."""
    folds = read_splits(path)
    if not 0 <= fold < len(folds):
        raise DataError(f"{path}: has {len(folds)} folds; fold {fold} requested (data.fold)")
    return {train_split: folds[fold]["train"], val_split or "val": folds[fold]["val"]}


def find_groups_file(root: str | Path) -> Path | None:
    """``groups.json`` or ``groups.txt`` in the data folder ``root``, if there is one."""
    return next((Path(root) / n for n in GROUPS_FILES if (Path(root) / n).is_file()), None)


def read_groups(path: str | Path) -> dict[str, str]:
    """Case id -> group from a groups file (``.json`` object, else ``<case id> <group>`` lines)."""
    path = Path(path)
    try:
        text = os.fsdecode(path.read_bytes())
    except OSError as err:
        raise DataError(f"{path}: cannot read groups file ({err.strerror or err})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected an object {{\"<case id>\": \"<group>\", ...}}")
        return {str(k): str(v) for k, v in data.items()}
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}: line {n}: expected '<case id> <group>', got {line.strip()!r}")
        out[parts[0]] = parts[1]
    return out


def case_groups(ids: Sequence[str], groups_file: str | Path | None, reader: object | None = None) -> tuple[dict[str, str], str]:
    """Each case's group and a description of where the grouping came from (recorded in ``cv.json``)."""
    if groups_file is not None:
        table = read_groups(groups_file)
        missing = [c for c in ids if c not in table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{groups_file}: no group for case {missing[0]!r}{more}")
        return {c: table[c] for c in ids}, f"groups file {groups_file}"
    key = getattr(reader, "group_of", default_group)
    out = {c: key(c) for c in ids}
    n = len(set(out.values()))
    what = "one group per case" if n == len(out) else f"{n} groups (patient / volume / video) from the case ids"
    return out, f"reader key: {what}"
