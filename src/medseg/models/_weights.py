"""Safe weight loading: read a checkpoint file, remap its keys, and load it with a strict count.

timm's ``features_only`` loading (and ``load_state_dict(strict=False)`` in general) silently leaves
weights whose names or shapes do not match at their random initialisation. Everything in medseg
loads weights through :func:`load_matching`, which counts the tensors it matched and raises
:class:`WeightLoadError` (file name, matched / missing / unexpected / mismatched counts, a few
examples) unless every expected tensor was found with the right shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from medseg.utils import MedsegError

_log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]

# Wrappers under which training scripts commonly nest the weights.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params", "params_ema")


class WeightLoadError(MedsegError, RuntimeError):
    """A weight file could not be read or fetched, or its tensors do not cover what the model expects.

    A user error: the CLI prints it as one line and exits with code 2.
    """


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read a state_dict from ``path`` without executing pickled code.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True, map_location="cpu")``. A dict that wraps the weights under a
    usual key (``state_dict``, ``model``, ...) is unwrapped. Non-tensor entries are dropped.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weight file not found: {p}")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - safetensors ships with timm
            raise WeightLoadError(f"{p}: reading .safetensors needs the 'safetensors' package") from err
        obj: object = load_file(str(p), device="cpu")
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise WeightLoadError(
                f"{p}: cannot be read as a weights-only PyTorch file ({type(err).__name__}: {err}). "
                "Only plain state_dicts (tensors in dicts) are accepted, never pickled code."
            ) from None
    for _ in range(3):  # unwrap nested containers, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise WeightLoadError(
            f"{p}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise WeightLoadError(f"{p}: holds no tensors")
    return sd


def strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: Sequence[str]) -> StateDict:
    """Remove the first matching prefix of each key (e.g. DataParallel's ``module.``)."""
    out: StateDict = {}
    for k, v in state_dict.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre) :]
                break
        out[k] = v
    return out


def rename_keys(
    state_dict: Mapping[str, Tensor],
    rules: Sequence[tuple[str, str | None]],
    *,
    keep_unmatched: bool = True,
) -> StateDict:
    """Rename keys by prefix: the first rule ``(old_prefix, new_prefix)`` that matches wins.

    ``new_prefix=None`` drops the key. Keys no rule matches are kept as they are
    (``keep_unmatched=True``) or dropped.
    """
    out: StateDict = {}
    for k, v in state_dict.items():
        for old, new in rules:
            if k.startswith(old):
                if new is not None:
                    out[new + k[len(old) :]] = v
                break
        else:
            if keep_unmatched:
                out[k] = v
    return out


def map_keys(state_dict: Mapping[str, Tensor], fn: Callable[[str], str | None]) -> StateDict:
    """Rename every key with ``fn`` (``None`` drops it); two keys mapping to one name is an error."""
    out: StateDict = {}
    for k, v in state_dict.items():
        new = fn(k)
        if new is None:
            continue
        if new in out:
            raise WeightLoadError(f"two checkpoint tensors map to the same name {new!r} (second one: {k!r})")
        out[new] = v
    return out


@dataclass
class LoadReport:
    """What :func:`load_matching` found: counts of tensors and a few names of each kind."""

    source: str
    expected: int
    matched: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched and self.matched == self.expected

    def summary(self, examples: int = 5) -> str:
        parts = [f"{self.matched}/{self.expected} expected tensors matched"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:examples])})")
        if self.mismatched:
            ex = ", ".join(
                f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:examples]
            )
            parts.append(f"{len(self.mismatched)} with a different shape (e.g. {ex})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:examples])})")
        return f"{self.source}: " + "; ".join(parts)


def _optional(key: str) -> bool:
    # BatchNorm's step counter: absent from old checkpoints, irrelevant to the forward pass.
    return key.endswith("num_batches_tracked")


def load_matching(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *expected_prefixes: str,
    strict_count: bool = True,
    ignore_unexpected: bool = False,
    source: str = "state_dict",
) -> LoadReport:
    """Copy ``state_dict`` into ``module`` and count what matched.

    The expected tensors are the entries of ``module.state_dict()`` whose names start with one of
    ``expected_prefixes`` (all entries when none is given); ``num_batches_tracked`` counters are
    optional. With ``strict_count=True`` (the default) a :class:`WeightLoadError` is raised -- and
    nothing is loaded -- unless every expected tensor is present with the same shape and (unless
    ``ignore_unexpected``) the file holds nothing else. ``source`` names the file in messages.
    """
    own = module.state_dict()
    expected = {
        k: v for k, v in own.items() if not expected_prefixes or k.startswith(tuple(expected_prefixes))
    }
    matched: StateDict = {}
    mismatched = []
    unexpected = []
    for k, v in state_dict.items():
        if k not in expected:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(expected[k].shape):
            mismatched.append((k, tuple(v.shape), tuple(expected[k].shape)))
        else:
            matched[k] = v
    missing = [
        k for k in expected if k not in matched and not _optional(k) and k not in {m[0] for m in mismatched}
    ]
    n_expected = sum(1 for k in expected if not _optional(k))
    n_matched = sum(1 for k in matched if not _optional(k))
    report = LoadReport(source, n_expected, n_matched, missing, unexpected, mismatched)
    bad = bool(missing or mismatched or (unexpected and not ignore_unexpected))
    if bad and strict_count:
        raise WeightLoadError(
            report.summary()
            + ". Refusing to load: a partial load would leave the other weights at their random initialisation."
        )
    module.load_state_dict(matched, strict=False)
    (_log.warning if bad else _log.info)(report.summary())
    return report


def check_constant(state_dict: Mapping[str, Tensor], keys: Iterable[str], value: float, source: str) -> None:
    """Raise unless every tensor named in ``keys`` (when present) is filled with ``value``."""
    for k in keys:
        t = state_dict.get(k)
        if t is not None and not bool(torch.all(t == value)):
            raise WeightLoadError(
                f"{source}: {k} is expected to be the fixed constant {value}, but it is not"
            )
