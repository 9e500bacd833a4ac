"""Typed configuration (pydantic) loaded from YAML recipes, with ``--set key=value`` overrides.

A recipe is a YAML file with the sections below; ``base: other_recipe`` inherits another recipe and
overrides it key by key. Built-in recipes live in ``medseg/recipes/*.yaml`` and are named without
the extension (``medseg train --recipe m2snet_polyp``).
"""

from __future__ import annotations

import copy
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

_log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A recipe or override a user wrote is invalid (the CLI prints it as one line, exit code 2)."""


class _Strict(BaseModel):
    # NaN / Inf are never a valid setting (an lr of nan trains nothing and reports success)
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class NormalizeConfig(_Strict):
    """How image intensities are normalised after reading.

    ``imagenet``: ImageNet mean/std on [0, 1] RGB (or ``mean``/``std`` given explicitly);
    ``window``: clip to ``window`` (e.g. CT HU [-125, 275]) and scale to [0, 1];
    ``unit``: images already in [0, 1] (PNG/JPEG divided by 255, ACDC h5) are left as they are;
    ``zscore``: per-image zero mean / unit variance;
    ``auto``: chosen from the data when training starts (:mod:`medseg.data.derive`): ``zscore`` for grey
    and for RGB images, ``imagenet`` for RGB images into a pretrained backbone.
    """

    kind: Literal["imagenet", "window", "unit", "zscore", "auto"] = "unit"
    window: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


#: Kinds of input file a run may be given: image files (PNG/JPEG/TIFF, and arrays), NIfTI volumes, TransUNet h5/npz.
InputKind = Literal["image", "nifti", "h5"]


class InputsConfig(_Strict):
    """What a run records about its inputs when training starts; ``predict`` and ``evaluate`` apply it.

    ``normalize``: for raw inputs of another kind than the training files, the normalisation that maps
    them to what the model saw, in place of ``data.normalize`` -- read from the data set (the built-in
    phantom-ct's PNGs are HU windowed to [-160, 240] and divided by 255, so its NIfTI volumes, in HU, get
    ``nifti: {kind: window, window: [-160, 240]}``). ``range``: the 0.5th and 99.5th percentiles of the
    training inputs after normalisation; an input far outside it (or squeezed into a sliver of it) gets
    one warning line.
    """

    normalize: dict[InputKind, NormalizeConfig] = Field(default_factory=dict)
    range: tuple[float, float] | None = None


class AugmentConfig(_Strict):
    """Training augmentation (MONAI). ``preset: transunet`` is TransUNet's RandomGenerator.

    ``prob``: probability of each ``basic`` transform; ``rotate_prob``: probability of the ±``rotate_deg``
    rotation alone (``null``: ``prob``, as before; MSNet/M2SNet's official loader rotates every sample: 1.0).
    """

    preset: Literal["none", "basic", "transunet"] = "basic"
    flip: bool = True
    vflip: bool = False
    rot90: bool = False
    rotate_deg: NonNegativeFloat = 0.0
    prob: float = Field(0.5, ge=0, le=1)
    rotate_prob: float | None = Field(None, ge=0, le=1)


class DataConfig(_Strict):
    format: Literal["image_folder", "transunet", "nnunet_raw", "pranet"] = "image_folder"
    root: str | None = None
    builtin: str | None = None  # generate this built-in data set when ``root`` is empty
    builtin_seed: int = 0
    builtin_count: int | None = None
    image_dir: str = "images"
    mask_dir: str = "masks"
    # ``auto`` (here, in data.size, data.normalize.kind and the three split names): derived from the data folder
    # when training starts (medseg.data.derive), written into the run's config.yaml and described in ``derived``
    num_classes: int | Literal["auto"] = 2  # including background; 2 = binary
    in_channels: int | Literal["auto"] = 1
    class_names: list[str] | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    split_seed: int = 0
    val_fraction: float = Field(0.1, ge=0, lt=1)  # used when no val split file exists
    test_fraction: float = Field(0.2, ge=0, lt=1)  # seeded split by case when a data set has no split files at all
    fold: NonNegativeInt = 0  # nnU-Net splits_final.json fold (of splits_file, or of a nnunet_raw root's own file)
    # a splits_final.json (list of {"train": [...], "val": [...]}): fold ``fold`` replaces the train / val splits
    # (set by `medseg train --folds K`); the test split is left as it is
    splits_file: str | None = None
    size: tuple[PositiveInt, PositiveInt] | Literal["auto"] = (224, 224)
    multiscale: list[PositiveInt] | None = None  # one size per batch from this list (training only)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    inputs: InputsConfig = Field(default_factory=InputsConfig)  # filled by `medseg train`
    derived: str | None = None  # what `medseg train` derived from the data for the ``auto`` values (one line)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    skip_empty_slices: bool = False
    # "classes": 1 sigmoid channel (binary) or num_classes softmax channels; "regions": num_classes - 1 sigmoid
    # channels, channel k = label >= k + 1 (nested regions: MDA-U-Net's organ incl. tumour, tumour), trained
    # with region losses (region_bce) and decoded as nnU-Net's regions (medseg.engine.decode)
    targets: Literal["classes", "regions"] = "classes"
    max_train_cases: int | None = None  # subset for quick runs
    max_val_cases: int | None = None
    batch_size: PositiveInt = 8
    num_workers: NonNegativeInt = 0
    # keep decoded, normalised, resized samples in memory: "auto" = when the estimate fits in
    # cache_memory_fraction of the available memory (the estimate is logged at start), else on disk;
    # "disk" = on disk (MONAI PersistentDataset: one file per sample in cache_dir, reused by later runs with
    # the same preprocessing); false = decode at every step
    cache: bool | Literal["auto", "disk"] = "auto"
    cache_memory_fraction: float = Field(0.5, gt=0, le=1)
    cache_dir: str | None = None  # the disk cache's folder; null = <run folder>/cache

    @field_validator("num_classes")
    @classmethod
    def _classes(cls, v: int | str) -> int | str:
        if v != "auto" and v < 2:
            raise ValueError("num_classes counts the background: use 2 for a binary task")
        return v

    @property
    def out_channels(self) -> int:
        """1 for binary (sigmoid), else ``num_classes`` (softmax); ``num_classes - 1`` sigmoid channels for regions."""
        if self.num_classes == "auto":
            raise ConfigError("data.num_classes is 'auto': it is derived from the data when training starts")
        if self.targets == "regions":
            return self.num_classes - 1
        return 1 if self.num_classes == 2 else self.num_classes


class ModelConfig(_Strict):
    name: str = "unet"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossTerm(_Strict):
    """One weighted term: ``loss`` applied to ``output`` (``logits`` or ``aux/<name>``) or ``outputs``."""

    loss: str
    output: str | None = "logits"
    outputs: list[str] | None = None
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossConfig(_Strict):
    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm(loss="dice_ce")])


class ParamGroup(_Strict):
    """Parameters whose name starts with any of ``prefixes`` get ``lr * lr_mult``."""

    prefixes: list[str]
    lr_mult: float = 1.0
    weight_decay: float | None = None


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    param_groups: list[ParamGroup] = Field(default_factory=list)


class ScheduleConfig(_Strict):
    """``poly`` (per iteration, ``power``), ``triangle`` (MSNet, per epoch), ``warmup_cosine``, ``constant``.

    Built from torch's schedulers (:mod:`medseg.engine.schedules`); ``min_lr_ratio``: the cosine's floor as a
    fraction of ``optim.lr``, one absolute floor for every param group (torch's ``eta_min``).
    """

    name: Literal["poly", "triangle", "warmup_cosine", "constant"] = "constant"
    power: PositiveFloat = 0.9
    warmup_epochs: NonNegativeFloat = 0.0
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class StrategyConfig(_Strict):
    """How one batch is trained: ``single`` pass, or MGRAD-UNet's ``feedback`` passes."""

    name: Literal["single", "feedback"] = "single"
    feedback_iters: PositiveInt = 3
    update: Literal["per_pass", "summed"] = "per_pass"


class TrainerConfig(_Strict):
    max_epochs: int = Field(10, ge=-1)  # -1: no epoch limit (then max_steps or max_time_s ends the run)
    max_steps: int = Field(-1, ge=-1)
    max_time_s: PositiveFloat | None = None
    precision: str = "auto"  # "auto" = bf16/16-mixed on GPU, 32 on CPU
    # train in torch.channels_last (oneDNN's NHWC convolutions): a timm ResNet-34 U-Net step 1.14x fp32 and
    # 2.15x with bf16 on a 2-core AVX512-BF16 CPU, against 1.90x for bf16 alone (2-D models only)
    channels_last: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accumulate_grad_batches: PositiveInt = 1
    gradient_clip_val: PositiveFloat | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    check_val_every_n_epoch: PositiveInt = 1  # the interval to start with (and to keep unless val_time_fraction)
    # validate less often when validation takes more than this fraction of the training time (null: never adapt);
    # the last epoch is always validated
    val_time_fraction: float | None = Field(0.1, gt=0, le=1)
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    val_metric: Literal["dice", "loss"] = "dice"  # selects checkpoints/best.ckpt: max Dice or min loss
    log_every_n_steps: PositiveInt = 10
    overlays: NonNegativeInt = 4
    checkpoint_every_n_steps: PositiveInt = 50  # also write checkpoints/last.ckpt mid-epoch (for --resume)
    deterministic: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _some_limit(self) -> TrainerConfig:
        if self.max_epochs == 0:
            raise ValueError("max_epochs must be >= 1 (or -1 with max_steps or max_time_s)")
        if self.max_epochs == -1 and self.max_steps <= 0 and not self.max_time_s:
            raise ValueError("max_epochs=-1 trains forever: set max_steps or max_time_s")
        return self


class LabelGroup(_Strict):
    """Named foreground labels: in ``eval.label_groups`` scored as one binary class (organ ∪ tumour),
    in ``eval.class_groups`` the mean of the listed classes' scores (SNet's Tissue / Small / Large)."""

    name: str
    labels: list[int]

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("a label group needs at least one label")
        if min(v) < 1:
            raise ValueError(f"labels {v}: a group merges foreground labels (>= 1), not the background 0")
        if len(set(v)) != len(v):
            raise ValueError(f"labels {v}: a label is repeated")
        return v


def _groups_from_mapping(v: Any) -> Any:
    """``{name: labels}`` -> ``[{name, labels}]`` (recipes write lists: ``base:`` replaces lists)."""
    if isinstance(v, dict):
        return [{"name": k, "labels": labels} for k, labels in v.items()]
    return v


def _unique_names(v: list[LabelGroup], what: str) -> list[LabelGroup]:
    names = [g.name for g in v]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} name(s) {', '.join(dup)} used twice")
    return v


def resolve_protocol(protocol: str, volume: bool) -> str:
    """``auto`` -> ``volume`` when the cases are volumes, else ``image``; other protocols unchanged."""
    return ("volume" if volume else "image") if protocol == "auto" else protocol


def resolve_mode(mode: str, protocol: str, volume: bool = False) -> str:
    """The empty-mask rule evaluation and validation use (NOTES §7 item 17).

    ``auto``: ``paper`` (TransUNet's ``calculate_metric_percase``) for the volume protocol it was
    written for, ``strict`` for per-image 2D evaluation (``image``, ``polyp``); ``paper`` / ``strict``
    are kept as given. ``protocol="auto"`` is first resolved with ``volume`` (are the cases volumes?).
    """
    if mode != "auto":
        return mode
    return "paper" if resolve_protocol(protocol, volume) == "volume" else "strict"


class EvalConfig(_Strict):
    """How runs are evaluated.

    ``mode``: the empty-mask rule (:mod:`medseg.metrics.aggregate`); ``auto`` = ``paper`` for the
    ``volume`` protocol, ``strict`` for ``image`` / ``polyp`` (:func:`resolve_mode`). Training
    validation uses the same resolved rule.
    ``label_groups``: extra binary classes scored after the per-label ones, each the union of its
    ``labels`` (MDA-U-Net's foreground organ ∪ tumour); a list ``[{name, labels}]`` (recipes use it:
    ``base:`` merges mappings key by key but replaces lists) or a mapping ``{name: labels}``.
    ``class_groups``: extra columns, each the mean of the per-class scores of its ``labels`` (SNet's
    Tables 5-6: Tissue / Small / Large); same forms as ``label_groups``.
    ``aggregate``: ``case`` (mean over cases of each case's score, TransUNet) or ``pooled`` (TP/FP/FN
    summed over every pixel of the split, then one score per class: the "pixel-wise" reading of
    MDA-U-Net's Eq. 15); distances are per case in both.
    """

    protocol: Literal["auto", "image", "volume", "polyp"] = "auto"
    mode: Literal["auto", "paper", "strict"] = "auto"
    aggregate: Literal["case", "pooled"] = "case"
    hd_method: Literal["medpy", "monai"] = "medpy"
    use_spacing: bool = False
    batch_size: PositiveInt = 16
    feedback_iters: PositiveInt = 1  # MGRAD-UNet: >1 feeds the decoders' difference back at test time
    # How predictions at the training size return to each image's own size: "probabilities" (bilinear,
    # then threshold/argmax; MSNet's and PraNet's test scripts) or "labels" (argmax at the training size,
    # then nearest-neighbour zoom, order 0: TransUNet's test_single_volume, used by the Synapse/ACDC recipes)
    resize_back: Literal["probabilities", "labels"] = "probabilities"
    tta: bool = False  # mean probabilities over the four mirrorings (none, W, H, both)
    fast: bool = True  # Conv+BN folding + channels_last before inference (same results)
    # "whole": each image resized to data.size and predicted in one pass; "sliding_window": each image kept at
    # its own size and predicted by MONAI's SlidingWindowInferer (windows of data.size, Gaussian weighting,
    # overlap sw_overlap; images smaller than a window are zero-padded), logits combined before sigmoid/softmax
    inferer: Literal["whole", "sliding_window"] = "whole"
    sw_overlap: float = Field(0.5, ge=0.0, lt=1.0)
    label_groups: list[LabelGroup] = Field(default_factory=list)
    class_groups: list[LabelGroup] = Field(default_factory=list)

    @field_validator("label_groups", "class_groups", mode="before")
    @classmethod
    def _groups_from_mapping(cls, v: Any) -> Any:
        return _groups_from_mapping(v)

    @field_validator("label_groups")
    @classmethod
    def _unique_groups(cls, v: list[LabelGroup]) -> list[LabelGroup]:
        return _unique_names(v, "label group")

    @field_validator("class_groups")
    @classmethod
    def _unique_class_groups(cls, v: list[LabelGroup]) -> list[LabelGroup]:
        return _unique_names(v, "class group")


class Config(_Strict):
    name: str = "custom"
    description: str = ""
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _floor_below_every_group(cls, v: ScheduleConfig, info: ValidationInfo) -> ScheduleConfig:
        optim = info.data.get("optim")
        low = min([g.lr_mult for g in optim.param_groups] + [1.0]) if optim is not None else 1.0
        if v.name == "warmup_cosine" and v.min_lr_ratio > low:
            raise ValueError(f"min_lr_ratio={v.min_lr_ratio:g} is a floor for every param group (times optim.lr) "
                             f"and lies above the lowest group's lr_mult={low:g}")
        return v

    @field_validator("eval")
    @classmethod
    def _groups_fit_the_classes(cls, v: EvalConfig, info: ValidationInfo) -> EvalConfig:
        data = info.data.get("data")
        if data is None or data.num_classes == "auto":
            return v
        if v.protocol == "polyp" and data.num_classes != 2:
            raise ValueError(f"the polyp protocol is binary (PraNet's metrics) but data.num_classes is {data.num_classes}: "
                             "use eval.protocol=image (per-image Dice, IoU, HD95 per class) or auto")
        for key, groups in (("label_groups", v.label_groups), ("class_groups", v.class_groups)):
            for g in groups:
                bad = [lab for lab in g.labels if lab >= data.num_classes]
                if bad:
                    raise ValueError(
                        f"{key} {g.name!r}: label {bad[0]} is outside 1..{data.num_classes - 1} "
                        f"(data.num_classes = {data.num_classes})"
                    )
                if data.class_names and g.name in data.class_names:
                    raise ValueError(f"{key} {g.name!r}: the name is already a class name")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("medseg.recipes").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_name: str) -> dict[str, Any]:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"recipe file not found: {p}")
        text = p.read_text()
        where = str(p)
    else:
        res = resources.files("medseg.recipes") / f"{path_or_name}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown recipe {path_or_name!r}; built-in recipes: {', '.join(recipe_names())}")
        text = res.read_text()
        where = f"recipe {path_or_name}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping of sections")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(f"recipe inheritance loops: {' -> '.join(seen + (name,))}")
    data = _read_yaml(name)
    base = data.pop("base", None)
    if base:
        data = deep_merge(_resolve(str(base), seen + (name,)), data)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.01"`` -> (["optim", "lr"], 0.01); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.setdefault(k, {}), dict):
                raise ConfigError(f"--set {item}: {k!r} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return out


#: ``data.*`` keys the trained model fixes: ``evaluate`` / ``predict --set`` cannot change them.
FIXED_BY_MODEL = ("data.num_classes", "data.in_channels", "data.targets")


def check_run_overrides(overrides: list[str], command: str = "evaluate") -> None:
    """``evaluate`` / ``predict --set`` change only ``data.*`` and ``eval.*`` keys, not those the model fixes."""
    for item in overrides:
        keys, _ = parse_override(item)
        key = ".".join(keys)
        if len(keys) < 2 or keys[0] not in ("data", "eval"):
            raise ConfigError(f"--set {item}: {command} changes only data.* and eval.* keys of the run's config")
        if key in FIXED_BY_MODEL:
            raise ConfigError(f"--set {item}: {key} is fixed by the trained model")


def auto_keys(cfg: DataConfig) -> list[str]:
    """The ``data.*`` keys of ``cfg`` still set to ``auto`` (derived by :mod:`medseg.data.derive`)."""
    keys = [k for k in ("in_channels", "num_classes", "size", "train_split", "val_split", "test_split")
            if getattr(cfg, k) == "auto"]
    return keys + (["normalize.kind"] if cfg.normalize.kind == "auto" else [])


def run_config_with_overrides(cfg: Config, overrides: list[str], where: str, command: str = "evaluate") -> Config:
    """A trained run's config with ``--set`` overrides applied and validated. An explicit ``data.normalize``
    applies to every input kind: it replaces the per-kind mappings the run recorded (``data.inputs.normalize``)."""
    check_run_overrides(overrides, command)
    data = cfg.to_dict()
    if any(parse_override(o)[0][:2] == ["data", "normalize"] for o in overrides):
        data["data"]["inputs"]["normalize"] = {}
    out = validate(apply_overrides(data, overrides), where=f"{where} with --set")
    if auto_keys(out.data):
        raise ConfigError(f"--set data.{auto_keys(out.data)[0]}=auto: values are derived from the data only when "
                          "training starts; give the value")
    return out


def _preset_names(chosen: Any) -> list[str]:
    """``a``, ``a,b``, ``[a, b]`` or nested lists of those (``--preset "[a, b]"``) as a flat list of names."""
    if isinstance(chosen, str):
        return [n.strip() for n in chosen.strip("[]").split(",") if n.strip()]
    if isinstance(chosen, list | tuple):
        return [n for c in chosen for n in _preset_names(c)]
    raise ConfigError(f"preset: expected a name or a list of names, got {chosen!r}")


def _apply_presets(data: dict[str, Any]) -> dict[str, Any]:
    """``preset: NAME`` (or a list of names, applied in order) merges ``presets.NAME`` on top."""
    chosen = data.pop("preset", None)
    if chosen is None:
        return data
    presets = data.get("presets") or {}
    for name in _preset_names(chosen):
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; this recipe has: {', '.join(presets) or 'none'}")
        data = deep_merge(data, presets[name])
    return data


def validate(data: dict[str, Any], where: str = "config") -> Config:
    try:
        return Config.model_validate(_apply_presets(copy.deepcopy(data)))
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        given = f" (got {first['input']!r})" if not isinstance(first.get("input"), dict | list) and "input" in first else ""
        raise ConfigError(f"{where}: {loc}: {first['msg']}{given}") from None


def load_config(recipe: str = "quickstart", overrides: list[str] | None = None) -> Config:
    """Load a built-in recipe by name or a YAML file, apply ``key=value`` overrides, validate.

    Order: the recipe (and its ``base:`` chain), then its presets (``preset=NAME`` among the overrides
    chooses them), then every other override -- so an explicit ``--set`` always wins over a preset.
    """
    overrides = overrides or []
    keys = [parse_override(o)[0] for o in overrides]
    is_preset = [k == ["preset"] for k in keys]
    data = apply_overrides(_resolve(recipe), [o for o, p in zip(overrides, is_preset) if p])
    data = _apply_presets(data)
    recipe_size = (data.get("data") or {}).get("size")
    data = apply_overrides(data, [o for o, p in zip(overrides, is_preset) if not p])
    if ["data", "size"] in keys and ["data", "multiscale"] not in keys:
        data = _follow_size(data, recipe_size)
    return validate(data, where=f"recipe {recipe}")


def _follow_size(data: dict[str, Any], recipe_size: Any) -> dict[str, Any]:
    """An explicit ``data.size`` scales the recipe's ``data.multiscale`` list by the same factor, each size
    rounded to a multiple of the model's stride (one size left: multi-scale off), and says so in one line."""
    d = data.get("data") or {}
    sizes, new = d.get("multiscale"), d.get("size")
    try:
        old_hw = [int(v) for v in recipe_size or (224, 224)]
        new_hw = [int(v) for v in new]
        factor = (new_hw[0] * new_hw[1] / (old_hw[0] * old_hw[1])) ** 0.5
        sizes = [int(v) for v in sizes or []]
    except (TypeError, ValueError):
        return data  # validation reports the bad value
    if not sizes or new_hw == old_hw:
        return data
    from medseg.catalog import read_catalog

    model = (data.get("model") or {}).get("name")
    stride = next((int(r["stride"]) for r in read_catalog() if r["name"] == model), 32)
    scaled = sorted({max(stride, stride * round(v * factor / stride)) for v in sizes})
    out = copy.deepcopy(data)
    out["data"]["multiscale"] = scaled if len(scaled) > 1 else None
    what = f"scaled to {scaled} (multiples of {model}'s stride {stride})" if len(scaled) > 1 else "turned off"
    _log.warning("data.size=%sx%s: the recipe's multi-scale training %s for %sx%s is %s; set data.multiscale "
                 "to choose", *new_hw, sizes, *old_hw, what)
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    from medseg.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
