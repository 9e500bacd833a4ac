"""Ensembles: several trained runs (or every fold of a cross-validation folder) predicting as one.

:class:`EnsemblePredictor` runs each member's own pre-processing and inference (its training size,
normalisation, test-time augmentation), brings each member's probabilities (sigmoid / softmax) back
to the image's own size, and averages them; the labels are then thresholded (binary, > 0.5) or
argmaxed from the mean -- nnU-Net's ensembling of softmax outputs. ``eval.resize_back: labels`` of a
member does not apply: the ensemble's labels always come from the averaged probabilities.

Members must agree on what they predict: classes (``data.num_classes`` and class names where both
runs name them), input channels, and output kind (one sigmoid channel or K softmax channels);
otherwise :func:`check_compatible` refuses with one line. Evaluation settings (protocol, mode, label
groups) are the first member's.

A cross-validation folder (written by ``medseg train --folds K``) holds ``cv.json`` and one run
folder per fold, ``fold_0`` ... ``fold_<K-1>``; :func:`expand_runs` turns it into those run folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.predict import Predictor
from medseg.utils import MedsegError

_log = logging.getLogger(__name__)

#: The file that marks a cross-validation folder, and the name of fold ``i``'s run folder in it.
CV_FILE = "cv.json"


def fold_dir(cv_dir: str | Path, fold: int) -> Path:
    """Run folder of fold ``fold`` in a cross-validation folder."""
    return Path(cv_dir) / f"fold_{fold}"


def is_cv_dir(path: str | Path) -> bool:
    return (Path(path) / CV_FILE).is_file()


def expand_runs(paths: list[Path]) -> list[Path]:
    """Run folders (or ``.onnx`` files) of ``paths``: a cross-validation folder gives every fold's run folder.

    A fold without a checkpoint (not trained yet) is a one-line error: an ensemble of the folds
    trained so far would silently be another model than the folder's.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not is_cv_dir(p):
            out.append(p)
            continue
        try:
            k = int(json.loads((p / CV_FILE).read_text())["folds"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MedsegError(f"{p / CV_FILE}: cannot read ({err})") from None
        for i in range(k):
            d = fold_dir(p, i)
            if not (d / "checkpoints").is_dir() or not any((d / "checkpoints").glob("*.ckpt")):
                raise MedsegError(f"{p}: fold {i} has no checkpoint yet ({d}); train it with --folds {k} --fold {i}")
            out.append(d)
    seen = [str(Path(p).resolve()) for p in out]
    dup = next((p for p, r in zip(out, seen) if seen.count(r) > 1), None)
    if dup is not None:
        raise MedsegError(f"{dup}: given twice; an ensemble's members are distinct runs")
    return out


def check_compatible(predictors: list[Any], names: list[str]) -> None:
    """One-line :class:`MedsegError` unless every member predicts the same classes from the same inputs."""
    first = predictors[0].cfg.data
    for p, name in zip(predictors[1:], names[1:]):
        d = p.cfg.data
        problems = []
        if d.num_classes != first.num_classes:
            problems.append(f"{d.num_classes} classes, {names[0]} {first.num_classes}")
        elif d.class_names and first.class_names and list(d.class_names) != list(first.class_names):
            problems.append(f"classes {d.class_names}, {names[0]} {first.class_names}")
        if d.in_channels != first.in_channels:
            problems.append(f"{d.in_channels} input channel(s), {names[0]} {first.in_channels}")
        if d.out_channels != first.out_channels:
            problems.append(f"{d.out_channels} output channel(s), {names[0]} {first.out_channels}")
        if problems:
            raise MedsegError(f"runs are not compatible for an ensemble: {name} predicts with {'; '.join(problems)}")


def ensemble_id(paths: list[Path]) -> str:
    """8 hex digits naming a set of members (order-free), so two ensembles never share an output folder."""
    key = "\n".join(sorted(str(Path(p).resolve()) for p in paths))
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:8]


class EnsemblePredictor:
    """The mean of several :class:`Predictor` s' probabilities (see the module docstring).

    Behaves like a :class:`Predictor` for ``predict_images``, ``predict_volume`` and ``predict_case``
    (what ``medseg predict`` and ``medseg evaluate`` use); ``cfg`` is the first member's.
    """

    def __init__(self, members: list[Predictor], names: list[str] | None = None) -> None:
        if not members:
            raise MedsegError("an ensemble needs at least one run")
        self.names = names or [f"member {i}" for i in range(len(members))]
        check_compatible(members, self.names)
        self.members = members
        self.cfg = members[0].cfg
        self.num_classes = self.cfg.data.num_classes
        self.device = members[0].device
        self.precision = members[0].precision
        if any(m.cfg.eval.resize_back == "labels" for m in members):
            _log.info("ensemble: labels come from the averaged probabilities at each image's size "
                      "(eval.resize_back: labels does not apply)")

    def predict_images(self, images: list[Any], kind: str = "image",
                       source: str = "input") -> list[tuple[np.ndarray, np.ndarray]]:
        """2D images -> (labels [H, W], mean probabilities [K', H, W]) at each image's own size."""
        total: list[np.ndarray] | None = None
        for m in self.members:
            probs = [p.astype(np.float64) for _, p in m.predict_images(images, kind=kind, source=source)]
            total = probs if total is None else [t + p for t, p in zip(total, probs)]
        out = []
        for t in total or []:
            mean = (t / len(self.members)).astype(np.float32)
            labels = (mean[0] > 0.5).astype(np.int64) if mean.shape[0] == 1 else mean.argmax(0)
            out.append((labels, mean))
        return out

    predict_volume = Predictor.predict_volume
    predict_case = Predictor.predict_case


def check_unseen(ensemble: EnsemblePredictor, cases: set[str]) -> None:
    """One-line error when a case to evaluate is a training case of a cross-validation fold among the members
    (its ``data.splits_file``): a fold's val cases are the other folds' training cases."""
    from medseg.data.splits import read_splits

    for m, name in zip(ensemble.members, ensemble.names):
        d = m.cfg.data
        if not d.splits_file or not Path(d.splits_file).is_file():
            continue
        folds = read_splits(d.splits_file)
        seen = set(folds[d.fold]["train"] if d.fold < len(folds) else []) & cases
        if seen:
            raise MedsegError(f"{name} trained on {len(seen)} of the cases to evaluate (e.g. {sorted(seen)[0]!r}): "
                              "evaluate an ensemble of folds on the test split; out-of-fold results are in cv_summary")


def open_predictor(runs: list[Path], **kwargs: Any) -> Predictor | EnsemblePredictor:
    """A :class:`Predictor` for one run folder / ``.onnx`` file, else an :class:`EnsemblePredictor` of all of
    ``runs`` (cross-validation folders expanded); ``kwargs`` as :func:`medseg.engine.predict.open_run`."""
    from medseg.engine.predict import open_run

    paths = expand_runs(runs)
    if len(paths) == 1 and not is_cv_dir(runs[0]):
        return open_run(paths[0], **kwargs)
    members = [open_run(p, **kwargs) for p in paths]
    return EnsemblePredictor(members, [str(p) for p in paths])
