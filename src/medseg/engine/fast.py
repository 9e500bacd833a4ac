"""The fast inference path: eval mode, Conv+BN folding, channels_last and optional ``torch.compile``.

Every transformation here is exact up to float rounding (the tests check max |Δlogits| <= 1e-4 for
every registered model against the plain path):

- **Conv+BN folding.** A ``Conv2d`` (or ungrouped ``ConvTranspose2d``) that is immediately followed by a ``BatchNorm2d`` in execution
  order *inside nn.Sequential containers* (``ConvNormAct`` = Sequential(conv, norm, act); MONAI's
  ``Convolution`` = Sequential(conv, Sequential(norm, dropout, act)) -- nested plain Sequentials are
  flattened) gets the BN's eval affine folded into its weight and bias
  (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and the BN becomes ``nn.Identity``. BNs that do not
  directly follow a conv module (e.g. :class:`~medseg.layers.fusion.FixedFilter`'s, applied after a
  functional convolution and shared by several units) and modules used at more than one place are
  left alone.
  Kept instead of ``torch.fx.experimental.optimization.fuse`` (measured, ``benchmarks/results/fold_bn.md``):
  fx cannot trace MSNet or M2SNet (timm's feature extractor iterates a Proxy), nor U-Net / UNet++ / any model
  with the input-size check (shape-dependent control flow); without that check U-Net and UNet++ do trace,
  but into a wrong graph (MONAI's ``UpCat`` tests ``torch.jit.isinstance(x_e, Tensor)``, False for a Proxy,
  so the skip connections vanish and the traced model fails to run). No fx graph, so no speed to compare.
  Inductor's ``freezing`` folds the same pairs only inside ``torch.compile`` (opt-in here): on U-Net 224 it
  matched the outputs (2.5e-7) and ran 0.94x our latency, after a 35 s compile per process and input shape
  (``benchmarks/results/fold_bn_inductor.md``), so eager inference keeps this pass.
- **channels_last.** Parameters and buffers go to ``torch.channels_last``; a forward pre-hook converts a
  4D input too, so callers need not.
- **torch.compile** (opt-in). Compiles ``forward`` in place (state_dict and attributes unchanged); if
  compilation or the first compiled call fails, the model falls back to eager and the error is logged.

The all-ones subtraction filters of M2SNet/MGRAD-UNet are already computed as a channel sum + one
k x k box filter (``FixedFilter.fast = True``, the default); :func:`set_fixed_filter_fast` switches
them (``False`` = the official literal full convolution, used by tests and by ``model_stats(fast=False)``).

**Precision** (:func:`resolve_inference_precision`, :func:`inference_autocast`): ``fp32`` (default), ``bf16``
(``torch.autocast`` to bfloat16; logits are cast back to float32 before sigmoid/softmax by the callers) or
``auto`` (bf16 where the device has native bf16 -- a CPU with ``avx512_bf16`` / ``amx_bf16``, a GPU with bf16
support -- for a model whose bf16 masks were checked on a trained run, :data:`BF16_VERIFIED`; else fp32).
Submodules a model lists in ``bf16_fp32_modules`` stay float32 (:func:`keep_fp32_under_autocast`). Measured
quietly on this project's 2-core AMD EPYC (avx512_bf16), batch 1, paper sizes (``benchmarks/results/bf16.md``):
bf16 autocast takes 0.53-0.81x the fp32 fast path's latency (MSNet 352: 0.59x, and 0.47x the authors' fp32
code). An earlier check under load found autocast faster than converting the folded model to bf16 (MSNet
352: 0.87x vs 1.12x), so autocast it is. bf16 is not exact: ``benchmarks/results/bf16_agreement.md`` has
the mask agreement on trained runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode

_log = logging.getLogger(__name__)


PRECISIONS = ("fp32", "bf16", "auto")
#: models whose bf16 masks met the guard (>= 99.5 % of pixels equal to fp32's, mean Dice within 0.002) for a
#: trained run on real test data (``benchmarks/results/bf16_agreement.md``); ``auto`` picks bf16 only for these
#: (MDA-U-Net with its fp32 first block, ``MDAUNet.bf16_fp32_modules``: all-bf16 it missed, 99.23 %, Dice -0.006)
BF16_VERIFIED = frozenset({"unet", "timm_unet", "msnet", "m2snet", "mgrad_unet", "snet", "mda_unet"})
#: /proc/cpuinfo flags of a CPU that computes in bf16 natively (AVX512-BF16; Intel AMX)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags (:data:`BF16_CPU_FLAGS`) of this CPU; empty where none or unreadable (not Linux)."""
    return read_bf16_flags("/proc/cpuinfo")


def read_bf16_flags(cpuinfo: str) -> tuple[str, ...]:
    """The :data:`BF16_CPU_FLAGS` in the first ``flags`` line of a ``/proc/cpuinfo``-style file."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    except OSError:
        pass
    return ()


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes in bf16 natively (CPU: avx512_bf16 / amx_bf16 flags; CUDA: torch says)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def resolve_inference_precision(precision: str | None, device: str | torch.device = "cpu",
                                model: str | None = None) -> str:
    """``fp32`` / ``bf16`` / ``auto`` (``None`` = fp32) -> ``fp32`` or ``bf16`` for ``device`` (and ``model``).

    ``auto`` is bf16 where :func:`bf16_supported` and, when ``model`` is named, only for a model in
    :data:`BF16_VERIFIED` (else fp32 with a one-line note); ``bf16`` asked where the device has no native
    bf16 falls back to fp32 with a one-line note (emulated bf16 is slower than fp32 there).
    """
    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS:
        from medseg.utils import MedsegError

        raise MedsegError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if bf16_supported(device):
        if precision == "auto" and model is not None and model not in BF16_VERIFIED:
            _log.warning("precision auto: fp32 for %s (its bf16 masks have not been checked against fp32 on a "
                         "trained run); --precision bf16 forces bf16", model)
            return "fp32"
        return "bf16"
    if precision == "bf16":
        what = "this CPU has no avx512_bf16 / amx_bf16" if torch.device(device).type == "cpu" else f"{device} has no bf16"
        _log.warning("precision bf16: %s; running in fp32", what)
    return "fp32"


def inference_autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to bf16 for a resolved ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_fp32_under_autocast(model: nn.Module) -> int:
    """Run the submodules a model names in ``bf16_fp32_modules`` in float32 even under bf16 autocast.

    A model declares them where bf16 inference measurably moved its masks (e.g. MDA-U-Net's full-resolution
    first encoder block on raw CT intensities); each such forward gets float32 inputs with autocast off, and
    its floating outputs are cast once to the autocast dtype (so every consumer does not cast the same map
    again, and adds/concatenations downstream stay in the autocast dtype, as after any autocast layer).
    Returns the number of submodules changed."""
    names = getattr(model, "bf16_fp32_modules", ())
    for name in names:
        module = model.get_submodule(name)
        if getattr(module, "medseg_fp32", False):
            continue
        # a method bound to the module, not a closure over its old bound forward: a deep copy of the module
        # (BN folding copies the conv it fuses) then runs the copy, not the original's unfolded weights
        module.forward = types.MethodType(_fp32_forward, module)  # type: ignore[method-assign]
        module.medseg_fp32 = True  # type: ignore[assignment]
    return len(names)


def _fp32_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``type(self).forward`` in float32 with autocast off; floating outputs cast to the autocast dtype."""
    forward = type(self).forward
    args = tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)
    device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
    if not torch.is_autocast_enabled(device):
        return forward(self, *args, **kwargs)
    with torch.autocast(device_type=device, enabled=False):
        out = forward(self, *args, **kwargs)
    dtype = torch.get_autocast_dtype(device)

    def cast(t: Any) -> Any:
        return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t

    return type(out)(cast(t) for t in out) if type(out) in (tuple, list) else cast(out)


def _is_plain_sequential(m: nn.Module) -> bool:
    """An ``nn.Sequential`` (or subclass) that keeps Sequential's forward: children run in order."""
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _leaves(seq: nn.Sequential, seen: set[int]) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, module) in execution order, descending into nested plain Sequentials
    (whose ids are added to ``seen``)."""
    seen.add(id(seq))
    for name, child in seq.named_children():
        if _is_plain_sequential(child):
            yield from _leaves(child, seen)  # type: ignore[arg-type]
        else:
            yield seq, name, child


def _is_conv(m: nn.Module) -> bool:
    """A Conv2d, or a ConvTranspose2d without groups (whose folding torch supports exactly)."""
    return type(m) is nn.Conv2d or (type(m) is nn.ConvTranspose2d and m.groups == 1)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        _is_conv(conv)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and conv.out_channels == bn.num_features
    )


def _static_pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(conv parent, conv name, bn parent, bn name) for Conv2d -> BatchNorm2d adjacent inside Sequentials."""
    pairs = []
    done: set[int] = set()
    for m in model.modules():
        if not _is_plain_sequential(m) or id(m) in done:
            continue
        # nested plain Sequentials come again in model.modules(); their pairs are already in this chain
        chain = list(_leaves(m, done))  # type: ignore[arg-type]
        for (p_conv, n_conv, conv), (p_bn, n_bn, bn) in zip(chain, chain[1:]):
            if _foldable(conv, bn):
                pairs.append((p_conv, n_conv, p_bn, n_bn))
    return pairs


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor inside nested tuples / lists / dicts / dataclasses (e.g. a SegOutput)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))


class _UseCounter(TorchFunctionMode):
    """Counts, per tensor object, how often it is an argument of a torch function (any use at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.uses: dict[int, int] = {}
        self.ignore: Tensor | None = None  # the input of the BatchNorm now running (its own checks)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for t in _tensors((args, kwargs)):
            if t is not self.ignore:
                self.add(t)
        return func(*args, **kwargs)

    def add(self, t: Tensor) -> None:
        self.uses[id(t)] = self.uses.get(id(t), 0) + 1


def _traced_pairs(model: nn.Module, example_input: Tensor) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """Conv2d -> BatchNorm2d pairs found by running ``model`` once: the BN's input is the conv's output
    and that output has no other use (conservatively: not even a shape query). Every call of the conv
    must feed the BN and every call of the BN must come from the conv."""
    names = {id(m): n for n, m in model.named_modules()}
    owner: dict[int, tuple[nn.Module, str]] = {}
    for parent in model.modules():
        for n, child in parent.named_children():
            owner.setdefault(id(child), (parent, n))
    counter = _UseCounter()
    conv_out: dict[int, list[Tensor]] = {}  # id(conv) -> outputs, kept alive so ids stay unique
    bn_in: dict[int, list[Tensor]] = {}
    handles = []

    def conv_hook(mod: nn.Module, args: Any, out: Any) -> None:
        conv_out.setdefault(id(mod), []).append(out)
        counter.uses[id(out)] = 0  # a new object: a count under this id belonged to a freed tensor

    def bn_pre(mod: nn.Module, args: Any) -> None:
        bn_in.setdefault(id(mod), []).append(args[0])
        counter.ignore = args[0]
        counter.add(args[0])  # the BN's own use

    def bn_post(mod: nn.Module, args: Any, out: Any) -> None:
        counter.ignore = None

    mods = {id(m): m for m in model.modules()}
    for m in mods.values():
        if _is_conv(m):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles += [m.register_forward_pre_hook(bn_pre), m.register_forward_hook(bn_post)]
    try:
        with torch.inference_mode(), counter:
            output = model(example_input)
        for t in _tensors(output):  # a tensor that escapes through the output is a use too
            counter.add(t)
    finally:
        for h in handles:
            h.remove()
    producer = {id(t): cid for cid, outs in conv_out.items() for t in outs}
    pairs = []
    for bid, inputs in bn_in.items():
        src = {producer.get(id(t)) for t in inputs}
        if len(src) != 1 or None in src:
            continue
        cid = src.pop()
        outs = conv_out[cid]
        if len(outs) != len(inputs) or any(counter.uses.get(id(t), 0) != 1 for t in outs):
            continue
        conv, bn = mods[cid], mods[bid]
        if _foldable(conv, bn) and cid in owner and bid in owner:
            _log.debug("traced Conv+BN pair %s -> %s", names.get(cid), names.get(bid))
            pairs.append((*owner[cid], *owner[bid]))
    return pairs


def fold_conv_bn(model: nn.Module, example_input: Tensor | None = None) -> int:
    """Fold Conv2d -> BatchNorm2d pairs in place and return how many were folded.

    Always: pairs adjacent inside (nested) ``nn.Sequential`` containers. With ``example_input``, also
    pairs wired by hand in a ``forward`` (e.g. timm's ResNet/Res2Net blocks ``conv1 -> bn1``), found by
    running the model once and checking the conv's output feeds only that BN. The model must be in
    eval mode (the BN's running statistics are what gets folded). Modules used at several places are
    never folded.
    """
    if model.training:
        raise ValueError("fold_conv_bn needs a model in eval mode")
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    pairs = _static_pairs(model)
    if example_input is not None:
        seen = {(id(getattr(pc, nc)), id(getattr(pb, nb))) for pc, nc, pb, nb in pairs}
        for pc, nc, pb, nb in _traced_pairs(model, example_input):
            if (id(getattr(pc, nc)), id(getattr(pb, nb))) not in seen:
                pairs.append((pc, nc, pb, nb))
    folded = 0
    with torch.no_grad():
        folded = _apply_folds(pairs, uses)
    return folded


def _apply_folds(pairs: list[tuple[nn.Module, str, nn.Module, str]], uses: dict[int, int]) -> int:
    folded = 0
    for p_conv, n_conv, p_bn, n_bn in pairs:
        conv, bn = getattr(p_conv, n_conv), getattr(p_bn, n_bn)
        if uses.get(id(conv), 0) > 1 or uses.get(id(bn), 0) > 1 or not _foldable(conv, bn):
            continue
        fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))  # type: ignore[arg-type]
        setattr(p_conv, n_conv, fused)
        setattr(p_bn, n_bn, nn.Identity())
        folded += 1
    return folded


def set_fixed_filter_fast(model: nn.Module, fast: bool = True) -> int:
    """Set ``.fast`` on every :class:`~medseg.layers.fusion.FixedFilter`; return how many there are."""
    from medseg.layers.fusion import FixedFilter

    n = 0
    for m in model.modules():
        if isinstance(m, FixedFilter):
            m.fast = fast
            n += 1
    return n


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if args and isinstance(args[0], Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` in place in ``torch.channels_last``, with a forward pre-hook that converts 4-D inputs too
    (3-D models and inputs are left as they are). Used by the fast path and by ``trainer.channels_last``."""
    model.to(memory_format=torch.channels_last)
    if not getattr(model, "_medseg_channels_last_hook", False):
        model.register_forward_pre_hook(_channels_last_input)
        model._medseg_channels_last_hook = True  # type: ignore[assignment]
    return model


def _safe_compiled_forward(model: nn.Module, **compile_kwargs: Any) -> Callable[..., Any] | None:
    """``model.forward`` compiled, falling back to eager (logged once) if compiling or running fails."""
    eager = model.forward
    try:
        compiled = torch.compile(eager, **compile_kwargs)
    except Exception as err:  # dynamo unavailable on this platform/Python
        _log.warning("torch.compile unavailable (%s: %s); using eager", type(err).__name__, err)
        return None
    state = {"ok": True}

    def forward(*args: Any, **kwargs: Any) -> Any:
        if state["ok"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as err:  # inductor needs a C++ compiler, unsupported op, ...
                state["ok"] = False
                _log.warning("torch.compile failed (%s: %s); falling back to eager", type(err).__name__,
                             str(err).splitlines()[0] if str(err) else "")
        return eager(*args, **kwargs)

    return forward


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
    compile_kwargs: dict[str, Any] | None = None,
    example_input: Tensor | None = None,
) -> nn.Module:
    """Return ``model`` (modified in place) ready for fast inference; results equal the plain path.

    Puts the model in eval mode, folds Conv+BN pairs, converts to channels_last and (``compile=True``)
    compiles ``forward`` with ``torch.compile`` where it works. ``example_input`` (one small valid batch
    on the model's device) lets folding also find Conv+BN pairs wired in a ``forward`` by hand (timm
    backbones); without it only pairs inside ``nn.Sequential`` are folded. Run the result under
    ``torch.inference_mode``.
    Not for training: folded BNs are gone.
    """
    model.eval()
    if fold_bn:
        n = fold_conv_bn(model, example_input)
        _log.debug("folded %d Conv+BN pairs", n)
    if channels_last:
        to_channels_last(model)
    if compile:
        fwd = _safe_compiled_forward(model, **(compile_kwargs or {}))
        if fwd is not None:
            model.forward = fwd  # type: ignore[method-assign]
    model.medseg_fast = True  # type: ignore[assignment]
    return model


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: Tensor, *, var_floor: float = 0.25, seed: int = 0) -> nn.Module:
    """Give a random model realistic BatchNorm statistics (for equality tests and benchmarks).

    Runs ``model(x)`` once in eval mode; each BatchNorm's running mean / variance become the
    per-channel statistics of the first input it sees in that pass (so later layers see the already
    calibrated earlier ones, and every activation is O(1)), the variance floored at ``var_floor`` to
    keep the network well conditioned; affine weights and biases are jittered (x U(0.8, 1.2),
    + N(0, 0.1)) so no BN is an identity. Returns the model in eval mode.
    """
    model.eval()
    g = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        if id(mod) in done:
            return
        done.add(id(mod))
        t = args[0].detach().float()
        dims = [0] + list(range(2, t.dim()))
        mod.running_mean.copy_(t.mean(dims))
        mod.running_var.copy_(t.var(dims, unbiased=False).clamp_min(var_floor))
        if mod.affine:
            c = mod.num_features
            mod.weight.mul_((torch.rand(c, generator=g) * 0.4 + 0.8).to(mod.weight))
            mod.bias.add_((torch.randn(c, generator=g) * 0.1).to(mod.bias))

    handles = [
        m.register_forward_pre_hook(pre)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return model
