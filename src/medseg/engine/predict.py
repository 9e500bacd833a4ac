"""Inference: :class:`Predictor` (from a run folder) and writers for PNG masks and NIfTI volumes.

Pre-processing equals validation's (normalisation + resize to the training size); predictions are
resized back to each image's own size as probabilities (bilinear) before thresholding (binary,
sigmoid > 0.5) or argmax (multi-class), as MSNet's prediction script does; nested sigmoid regions
(``data.targets: regions``, MDA-U-Net's organ / tumour channels) are decoded as nnU-Net does
(:mod:`medseg.engine.decode`).
With ``eval.inferer: sliding_window`` images keep their own size and MONAI's ``SlidingWindowInferer``
runs windows of the training size over them (:meth:`Predictor.sliding_window_logits`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.config import Config, validate
from medseg.engine.checkpoint import load_checkpoint, model_state_dict
from medseg.models import build_model
from medseg.utils import DataError, MedsegError, printable

_log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy.h5", ".h5")


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` falls back to ``last`` (a run without a validation split has no ``best``), with a note."""
    p = Path(which)
    if p.suffix == ".ckpt":
        return p
    ck = run_dir / "checkpoints"
    for name in ([which, "last"] if which == "best" else [which]):
        if (ck / f"{name}.ckpt").is_file():
            if name != which:
                _log.info("%s: no checkpoints/best.ckpt (trained without validation): using last.ckpt", run_dir)
            return ck / f"{name}.ckpt"
    raise MedsegError(f"{run_dir}: no checkpoints/{which}.ckpt (is this a finished run folder?)")


def without_pretrained(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model kwargs for rebuilding from a checkpoint: the weights come from the checkpoint, never a download."""
    return {k: v for k, v in kwargs.items() if k != "pretrained"}


def model_from_checkpoint(ckpt: dict[str, Any], path: Path) -> tuple[nn.Module, Config]:
    """The model a checkpoint describes, with its weights, and its config; one-line errors naming ``path``."""
    try:
        meta = ckpt["medseg"]
        cfg = validate(meta["config"], where=str(path))
        model = build_model(meta["model"], in_channels=meta["in_channels"], out_channels=meta["out_channels"],
                            **without_pretrained(meta["model_kwargs"]))
    except (KeyError, TypeError, ValueError) as err:
        raise MedsegError(f"{path}: bad checkpoint metadata ({type(err).__name__}: {_first_line(err)})") from None
    state = model_state_dict(ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing / unexpected keys, size mismatches
        model = _legacy_model(meta, state)  # written before a default changed (and kwargs were stored in full)?
        if model is None:
            raise MedsegError(f"{path}: the weights do not fit the stored model {meta['model']!r} and its kwargs "
                              f"({_first_line(err)})") from None
        _log.info("%s: written by an earlier medseg: built with that version's defaults %s", path,
                  model.medseg_legacy_kwargs)
    return model, cfg


def _legacy_model(meta: dict[str, Any], state: dict[str, Tensor]) -> nn.Module | None:
    """The model with the first set of earlier defaults its weights fit (see ``register_model``), or None."""
    from medseg.models import legacy_kwargs

    for kwargs in legacy_kwargs(meta["model"], without_pretrained(meta["model_kwargs"])):
        model = build_model(meta["model"], in_channels=meta["in_channels"], out_channels=meta["out_channels"],
                            **kwargs)
        try:
            model.load_state_dict(state)
        except RuntimeError:
            continue
        model.medseg_legacy_kwargs = kwargs  # type: ignore[attr-defined]
        return model
    return None


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] if lines else type(err).__name__


def input_error(err: BaseException, source: str) -> str:
    """One line for a failed input: the error's message, prefixed by ``source`` unless it names it."""
    msg = _first_line(err)
    if not isinstance(err, MedsegError):
        msg = f"{type(err).__name__}: {msg}"
    return msg if source in msg else f"{source}: {msg}"


def guarded(source: str, work: Callable[[], T], failures: list[str], *, fail_fast: bool = False) -> T | None:
    """``work()`` for one input; an error becomes one line naming ``source``, appended to ``failures``.

    With ``fail_fast`` the first error is raised as a :class:`~medseg.utils.DataError` holding that line.
    The traceback is logged at DEBUG level (``logging`` shows it when asked).
    """
    try:
        return work()
    except Exception as err:
        line = printable(input_error(err, source))
        _log.debug("input %s failed", printable(source), exc_info=True)
        if fail_fast:
            raise DataError(line) from None
        failures.append(line)
        return None


class Predictor:
    """A trained model plus the pre-processing it was trained with.

    ``fast=True`` (default: the config's ``eval.fast``, true unless set) runs the model through
    :func:`medseg.engine.fast.optimize_for_inference` before the first batch: Conv+BN folded (traced
    on that batch, so hand-wired pairs fold too),
    channels_last (measured 4-6 % faster on a 2-core CPU for MSNet and SNet, and the layout cuDNN
    prefers under AMP), and ``torch.compile`` with ``compile=True``. The results equal the plain
    path (tests: max |Δlogits| <= 1e-4 for every registered model). ``fast=False`` keeps the model as built.

    ``precision``: ``fp32`` (default), ``bf16`` (the forward under ``torch.autocast`` to bfloat16 where the
    device has native bf16, else fp32 with a note; logits cast to float32 before sigmoid/softmax) or ``auto``
    (bf16 where supported). An exported ``.onnx`` model always runs in fp32. ``self.precision`` is the one used.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        *,
        fast: bool | None = None,
        channels_last: bool = True,
        compile: bool = False,
        precision: str | None = None,
    ) -> None:
        from medseg.engine.fast import resolve_inference_precision

        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size or cfg.eval.batch_size
        self.feedback_iters = cfg.eval.feedback_iters
        self.num_classes = cfg.data.num_classes
        self.fast = cfg.eval.fast if fast is None else fast
        self.channels_last = channels_last
        self.compile = compile
        self.precision = resolve_inference_precision(precision, self.device, cfg.model.name)
        if self.precision == "bf16":
            from medseg.engine.fast import keep_fp32_under_autocast

            keep_fp32_under_autocast(self.model)  # the model's measured fp32 islands (bf16_fp32_modules)
        self._optimized = not self.fast or bool(getattr(model, "medseg_fast", False))
        self._transforms: dict[tuple[str, Any], Any] = {}  # (input kind, size or None) -> transform
        self._warned_range = False
        self._warned_inputs = False

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "cpu", **kwargs: Any) -> Predictor:
        """A run folder's checkpoint, or an exported ``.onnx`` file (run by onnxruntime on the CPU)."""
        run_dir = Path(run_dir)
        if run_dir.suffix.lower() == ".onnx":
            from medseg.engine.onnx_runtime import OnnxModel

            runner = OnnxModel(run_dir)
            kwargs["fast"] = False  # onnxruntime optimises the graph itself
            if kwargs.get("precision") not in (None, "fp32", "auto"):
                _log.warning("precision %s: an exported .onnx model runs in fp32", kwargs["precision"])
            kwargs["precision"] = "fp32"
            return cls(runner.as_module(), runner.cfg, device="cpu", **kwargs)
        if not run_dir.is_dir():
            raise MedsegError(f"run folder not found: {run_dir}")
        path = find_checkpoint(run_dir, checkpoint)
        model, cfg = model_from_checkpoint(load_checkpoint(path), path)
        return cls(model, cfg, device=device, **kwargs)

    # -- pre-processing ---------------------------------------------------------------------------
    def normalize_for(self, kind: str = "image") -> Any:
        """The normalisation for inputs of ``kind`` (``image``, ``nifti``, ``h5``): the run's recorded
        mapping for that kind (``data.inputs.normalize``), else ``data.normalize``."""
        return self.cfg.data.inputs.normalize.get(kind, self.cfg.data.normalize)

    def as_image(self, image: Any, *, strict: bool = False, kind: str = "image") -> np.ndarray:
        """One 2D image in any usual form -> float32 ``[in_channels, H, W]`` in reader units.

        Accepts a numpy array or torch tensor ``[H, W]``, ``[H, W, C]``, ``[C, H, W]`` (or ``[1, C, H, W]``)
        and a PIL image. The channel axis is the first or last one whose size is at most 4 or ``in_channels``
        (the first when both are). For a run normalised with ``unit``/``imagenet`` (inputs in [0, 1]) integer
        arrays are scaled as the image readers scale PNG/JPEG (uint8 / 255, wider integers / 65535) and a float
        image above 1 is an error with ``strict`` (``medseg.predict`` on arrays) and else a warning, once per
        Predictor; ``window``/``zscore`` runs take raw intensities (HU), as the volume readers.
        Channels are adapted as the readers do (grey -> repeated, RGB -> luminance, RGBA -> alpha dropped).
        Any other shape or channel count is a one-line :class:`MedsegError`.
        """
        from medseg.data.base import adapt_channels

        c_in = self.cfg.data.in_channels
        a = _to_array(image)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3:
            is_channel = [n <= 4 or n == c_in for n in (a.shape[0], a.shape[-1])]
            if not any(is_channel):
                raise MedsegError(f"image of shape {tuple(a.shape)}: cannot tell the channel axis; give [H, W], "
                                  f"[H, W, C] or [C, H, W] with C = {c_in}")
            if not is_channel[0]:
                a = np.moveaxis(a, -1, 0)
        else:
            raise MedsegError(f"image of shape {tuple(a.shape)}: expected one 2D image [H, W], [H, W, C] or [C, H, W]")
        if a.dtype.kind not in "buif":
            raise MedsegError(f"image of dtype {a.dtype}: expected numbers (uint8, uint16, int16 or float)")
        norm = self.normalize_for(kind).kind
        unit = norm in ("unit", "imagenet")  # the run expects [0, 1], as PNG/JPEG readers give
        if unit and a.dtype == np.uint8:
            a = a.astype(np.float32) / np.float32(255.0)
        elif unit and a.dtype.kind in "ui":
            a = a.astype(np.float32) / np.float32(65535.0)
        else:
            a = a.astype(np.float32, copy=False)
        if unit and kind == "image" and a.size and float(a.max()) > 1.0 + 1e-3:
            msg = (f"float image has values up to {float(a.max()):g} but this run expects [0, 1] "
                   f"(data.normalize.kind = {norm}): pass uint8 or divide by 255")
            if strict:
                raise MedsegError(msg)
            if not self._warned_range:
                self._warned_range = True
                _log.warning("%s", msg)
        if a.shape[0] == 4 and c_in in (1, 3):  # RGBA: alpha dropped, as the readers do
            a = a[:3]
        try:
            return adapt_channels(a, c_in, "image", allow_luminance=True)
        except MedsegError as err:
            raise MedsegError(f"{err} (shape {tuple(a.shape)}, channel axis first)") from None

    def preprocess(self, image: np.ndarray, kind: str = "image") -> Tensor:
        """One 2D image [C, H, W] in reader units -> normalised tensor [C, h, w] at the training size (at its
        own size with ``eval.inferer: sliding_window``); ``kind`` (``image``, ``nifti``, ``h5``) chooses the
        normalisation (:meth:`normalize_for`)."""
        size = tuple(image.shape[-2:]) if self.cfg.eval.inferer == "sliding_window" else None
        key = (kind, size)
        if key not in self._transforms:
            from medseg.data.transforms import build_transforms

            update: dict[str, Any] = {"normalize": self.normalize_for(kind)}
            if size is not None:
                update["size"] = size
            self._transforms[key] = build_transforms(self.cfg.data.model_copy(update=update), train=False)
        sample = {"image": np.asarray(image, dtype=np.float32), "label": np.zeros(image.shape[-2:], dtype=np.int64)}
        out = self._transforms[key](sample)
        return torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32)

    def check_range(self, image: np.ndarray, kind: str = "image", source: str = "input") -> None:
        """Warn once per Predictor (one line) when ``image`` lies far outside the training inputs' range."""
        if self._warned_inputs:
            return
        from medseg.data.inputs import normalized_values, range_warning

        msg = range_warning(normalized_values(image, self.normalize_for(kind)), self.cfg.data.inputs.range, source)
        if msg:
            self._warned_inputs = True
            _log.warning("%s", printable(msg))

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, x: Tensor, *, whole: bool = False) -> Tensor:
        """Raw float32 logits for a normalised batch (the forward in ``self.precision``); MGRAD-UNet may run
        feedback passes at test time.

        With ``eval.inferer: sliding_window`` (unless ``whole``) the logits of the windows are combined
        by :meth:`sliding_window_logits`, before any sigmoid/softmax."""
        from medseg.engine.fast import inference_autocast

        x = x.to(self.device)
        if self.cfg.eval.inferer == "sliding_window" and not whole:
            return self.sliding_window_logits(x)
        if not self._optimized:
            self._optimize(x[:1])
        with inference_autocast(self.precision, self.device):
            if self.feedback_iters > 1:
                feedback = None
                for _ in range(self.feedback_iters):
                    out = self.model(x, feedback=feedback)
                    feedback = out.extras.get("feedback")
                return out.logits.float()
            return self.model(x).logits.float()

    def sliding_window_logits(self, x: Tensor) -> Tensor:
        """Logits of a batch at any size from MONAI's ``SlidingWindowInferer``: windows of ``data.size``,
        ``eval.sw_overlap``, Gaussian weighting, ``eval.batch_size`` windows per forward pass."""
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=tuple(self.cfg.data.size), sw_batch_size=self.batch_size,
                                       overlap=self.cfg.eval.sw_overlap, mode="gaussian")
        return inferer(x, partial(self.logits, whole=True)).float()

    def _optimize(self, example: Tensor) -> None:
        from medseg.engine.fast import optimize_for_inference

        self._optimized = True
        if next(self.model.parameters(), None) is None:  # e.g. an onnxruntime session behind a module
            return
        optimize_for_inference(self.model, channels_last=self.channels_last, fold_bn=True, compile=self.compile,
                               example_input=example)

    def to_probabilities(self, logits: Tensor) -> Tensor:
        """Sigmoid (binary, ``data.targets: regions``) or softmax (:mod:`medseg.engine.decode`)."""
        from medseg.engine.decode import to_probabilities

        return to_probabilities(logits, self.cfg.data.targets)

    @torch.inference_mode()
    def probabilities(self, x: Tensor) -> Tensor:
        """Class probabilities of a normalised batch; with ``eval.tta`` the mean over the four mirrorings
        (none, W, H, both), each flipped back -- nnU-Net's mirroring test-time augmentation in 2D."""
        if not self.cfg.eval.tta:
            return self.to_probabilities(self.logits(x))
        total = None
        for dims in ((), (3,), (2,), (2, 3)):
            xi = x.flip(dims) if dims else x
            p = self.to_probabilities(self.logits(xi))
            p = p.flip(dims) if dims else p
            total = p if total is None else total + p
        return total / 4

    def to_labels(self, probs: Tensor) -> Tensor:
        """Threshold 0.5 (binary), argmax (classes) or nnU-Net's region decoding (:mod:`medseg.engine.decode`)."""
        from medseg.engine.decode import to_labels

        return to_labels(probs, self.cfg.data.targets)

    def _batches(self, images: list[np.ndarray], kind: str = "image") -> Iterator[tuple[int, Tensor]]:
        start = 0
        while start < len(images):
            end = min(start + self.batch_size, len(images))
            if self.cfg.eval.inferer == "sliding_window":  # images keep their sizes: a batch holds one size
                end = next((i for i in range(start + 1, end) if images[i].shape != images[start].shape), end)
            yield start, torch.stack([self.preprocess(im, kind) for im in images[start:end]])
            start = end

    def predict_images(self, images: list[np.ndarray], kind: str = "image",
                       source: str = "input") -> list[tuple[np.ndarray, np.ndarray]]:
        """2D images -> (labels [H, W] int64, probabilities [K', H, W] float32) at each own size.

        Each image is [C, H, W] in reader units or any form :meth:`as_image` accepts; ``kind`` (``image``,
        ``nifti``, ``h5``) chooses the normalisation; ``source`` names them in the range warning."""
        images = [self.as_image(im, kind=kind) for im in images]
        if images:
            self.check_range(np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1), kind, source)
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for start, batch in self._batches(images, kind):
            probs = self.probabilities(batch)
            for j in range(probs.shape[0]):
                size = tuple(images[start + j].shape[-2:])
                p = F.interpolate(probs[j : j + 1], size=size, mode="bilinear", align_corners=False)
                if self.cfg.eval.resize_back == "labels":
                    labels = zoom_labels(self.to_labels(probs[j : j + 1])[0].cpu().numpy(), size)
                else:
                    labels = self.to_labels(p)[0].cpu().numpy()
                results.append((labels, p[0].cpu().numpy()))
        return results

    def predict_volume(self, volume: np.ndarray, kind: str = "nifti",
                       source: str = "volume") -> tuple[np.ndarray, np.ndarray]:
        """Volume [C, D, H, W] -> labels [D, H, W] and probabilities [K', D, H, W], slice by slice in batches.

        ``kind``: ``nifti`` (raw units, e.g. HU) or ``h5`` (TransUNet's files), see :meth:`normalize_for`.

        Kept instead of MONAI's ``SliceInferer`` (``benchmarks/results/slice_inferer.md``): with identical outputs
        it was not faster -- end to end on an ACDC volume (9 slices, small U-Net, interleaved) SliceInferer / loop
        = 0.997, 1.006, 1.059 and 1.094 in four runs, and its batching alone (trivial network) costs 37.1 ms
        against our 30.5 ms per 9-slice volume (output buffer, importance map, accumulation); nor would it
        replace ``_batches``, which 2D images need anyway.
        """
        slices = [volume[:, z] for z in range(volume.shape[1])]
        res = self.predict_images(slices, kind=kind, source=source)
        return np.stack([r[0] for r in res]), np.stack([r[1] for r in res], axis=1)

    def predict_case(self, case: Any) -> tuple[np.ndarray, np.ndarray]:
        """A reader's :class:`~medseg.data.base.Case`, normalised for the kind of its file."""
        from medseg.data.inputs import input_kind

        path = case.meta.get("image_path")
        kind, source = input_kind(path), str(path or case.id)
        if case.image.ndim == 4:
            return self.predict_volume(case.image, kind=kind, source=source)
        return self.predict_images([case.image], kind=kind, source=source)[0]


def _to_array(image: Any) -> np.ndarray:
    """A numpy array from an array, a torch tensor or a PIL image (alpha dropped, palette -> RGB)."""
    if isinstance(image, Tensor):
        return image.detach().cpu().numpy()
    if hasattr(image, "getbands") and hasattr(image, "convert"):  # a PIL image, without importing PIL
        if image.mode in ("1", "LA", "La"):
            image = image.convert("L")
        elif image.mode not in ("L", "RGB", "I", "F") and not image.mode.startswith("I;16"):
            image = image.convert("RGB")
        return np.asarray(image)
    if isinstance(image, (str, Path)):
        raise MedsegError(f"{image}: Predictor takes arrays; read files with medseg.predict or `medseg predict`")
    a = np.asarray(image)
    if a.dtype == object:
        raise MedsegError(f"cannot read an image from {type(image).__name__}")
    return a


def zoom_labels(labels: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """A label map zoomed to ``size`` with ``scipy.ndimage.zoom(order=0)``, as TransUNet's
    ``test_single_volume`` brings its argmax back to the slice's own size."""
    if tuple(labels.shape) == tuple(size):
        return labels
    from scipy.ndimage import zoom

    factors = [s / n for s, n in zip(size, labels.shape)]
    out = zoom(labels, factors, order=0)
    if out.shape != tuple(size):  # zoom rounds n * (s / n) to the output shape: s, barring float surprises
        raise RuntimeError(f"zoom gave {out.shape}, expected {tuple(size)}")
    return out


# -- writing predictions ------------------------------------------------------------------------
def mask_to_png_array(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Binary -> {0, 255}; multi-class -> class indices 0..K-1 (uint8)."""
    if num_classes == 2:
        return (labels > 0).astype(np.uint8) * 255
    return labels.astype(np.uint8)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii.gz", ".nii"))


def list_inputs(path: Path) -> list[Path]:
    """The files to predict: ``path`` itself, or the images and volumes in folder ``path``.

    In a folder, nnU-Net channel files ``<case>_0001``, ... are left out when ``<case>_0000`` is there:
    they are read with it (one prediction per case).
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedsegError(f"input not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES + VOLUME_SUFFIXES))
    if not files:
        raise MedsegError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) or volumes ({', '.join(VOLUME_SUFFIXES)})")
    if any(_is_nifti(p) for p in files):
        from medseg.data.nnunet_raw import split_channel

        chans = {p: split_channel(p.name) for p in files if _is_nifti(p)}
        with_first = {case for case, ch in chans.values() if ch == 0}
        files = [p for p in files if not (p in chans and chans[p][1] and chans[p][0] in with_first)]
    return files


def _stem(path: Path) -> str:
    """The output name: the input's without extension; NIfTI ``<case>_0000`` gives ``<case>`` (nnU-Net)."""
    name = path.name
    if _is_nifti(path):
        from medseg.data.nnunet_raw import split_channel

        case, channel = split_channel(name)
        if channel == 0:
            return case
    for suf in (".nii.gz", ".npy.h5") + IMAGE_SUFFIXES + (".nii", ".h5"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def open_run(run_dir: str | Path, *, checkpoint: str = "best", device: str = "cpu", fast: bool | None = None,
             compile: bool = False, precision: str | None = None, overrides: list[str] | None = None,
             command: str = "predict") -> Predictor:
    """:meth:`Predictor.from_run` with ``--set`` overrides (``data.*`` / ``eval.*``) applied to the run's config."""
    from medseg.config import check_run_overrides, run_config_with_overrides

    check_run_overrides(overrides or [], command)
    predictor = Predictor.from_run(run_dir, checkpoint=checkpoint, device=device, fast=fast, compile=compile,
                                   precision=precision)
    if not overrides:
        return predictor
    onnx = Path(run_dir).suffix.lower() == ".onnx"  # onnxruntime optimises its graph itself: no fast path
    cfg = run_config_with_overrides(predictor.cfg, overrides, str(run_dir), command)
    return Predictor(predictor.model, cfg, device=predictor.device, fast=False if onnx else fast, compile=compile,
                     precision=predictor.precision)
