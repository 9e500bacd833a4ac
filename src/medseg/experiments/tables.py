"""Paper tables as data: which runs make a table, and the numbers the paper printed.

A :class:`Table` is a base recipe, the ``--set`` overrides every run shares, one :class:`Row` per
table row (its own overrides, its paper numbers), the metric columns (read from each run's
evaluation ``summary.json``), the baseline row that every other row is compared with, and the
overrides of each budget (``cpu-small``: a row trains in at most ``trainer.max_time_s`` = 8 minutes on
a 2-core CPU; ``paper``: the recipe as it is). :mod:`medseg.experiments.reproduce` runs them.

Paper numbers are copied from the papers in ``shared/papers`` (and ``NOTES.md`` §6) in the unit the
table shows (% for Dice / IoU, voxels for HD95); a number that cannot be read is ``None`` and shows
blank, with the reason in the table's notes. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

BUDGETS = ("cpu-small", "paper")
#: cpu-small: every run stops after this many seconds of training (Lightning's Timer; ``stopped_early``).
CPU_SMALL_SECONDS = 480


@dataclass(frozen=True)
class Column:
    """A metric column. ``key`` says where a run's evaluation summary holds the value:

    ``avg:<metric>`` (the average over classes; Dice / IoU pooled when the recipe pools), ``class:<name>:<metric>``
    (one class, by its class name), ``group:<name>`` (an ``eval.class_groups`` entry's mean Dice) or
    ``polyp:<key>`` (a polyp-protocol dataset value: ``meanDic``, ``meanIoU``, ``wFm``, ``Sm``, ``maxEm``, ``MAE``).
    ``percent``: fractions shown x100 (Dice, IoU); distances and MAE as they are.
    """

    key: str
    label: str
    percent: bool = True


@dataclass(frozen=True)
class Row:
    """One table row: ``sets`` are its ``--set`` overrides (``preset=NAME`` merges with the other presets);
    ``paper`` maps a column key to the paper's number (``None`` or absent: not printed / not readable)."""

    id: str
    label: str
    sets: tuple[str, ...] = ()
    paper: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str  # paper and table the rows and numbers come from
    recipe: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    baseline: str  # the row every other row is compared with (paired, per case)
    sets: tuple[str, ...] = ()  # overrides every run of the table shares
    budgets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"cpu-small": (), "paper": ()})
    stats: tuple[str, ...] = ("dice",)  # cases.csv metrics of the paired statistics
    notes: tuple[str, ...] = ()

    def row(self, row_id: str) -> Row:
        return next(r for r in self.rows if r.id == row_id)

    def __post_init__(self) -> None:
        ids = [r.id for r in self.rows]
        if len(set(ids)) != len(ids) or self.baseline not in ids:
            raise ValueError(f"table {self.name}: row ids must be unique and include the baseline {self.baseline!r}")
        if set(self.budgets) != set(BUDGETS):
            raise ValueError(f"table {self.name}: budgets must be exactly {', '.join(BUDGETS)}")


# ---------------------------------------------------------------------------------------- budgets
TIME_GUARD = f"trainer.max_time_s={CPU_SMALL_SECONDS}"

# Step times measured by benchmarks/cpu_runs.py (benchmarks/results/cpu_runs.md) on this 2-core CPU.
#: m2snet_polyp's `cpu` preset (random backbone, no LossNet, fp32, batch 8, 3 epochs) at 128 px, multi-scale
#: 96/128: 1.1 s per batch, 113 batches per Kvasir epoch, ~6.3 min for the 3 epochs.
POLYP_CPU = ("preset=cpu", "data.size=[128,128]", "data.multiscale=[96,128]", TIME_GUARD)
#: snet_synapse has no cpu preset: snet_acdc's `cpu` preset as overrides (96 px, batch 12, CNN 16..256, ViT
#: 16..128 at the legacy strides 4/8/16/32 as measured, AdamW 1e-3 constant, fp32): 0.44 s per batch; 5 epochs
#: ~6.8 min on Synapse (185 batches), ~4 on ACDC. (The paper's strides take 3.4x the CPU time per step here.)
SNET_CPU = (
    "data.size=[96,96]", "data.batch_size=12", "data.num_workers=0",
    "model.kwargs.cnn_channels=[16,32,64,128,256]", "model.kwargs.vit_dims=[16,32,64,128]",
    "model.kwargs.vit_strides=[4,8,16,32]",
    "optim={name: adamw, lr: 0.001, weight_decay: 0.0001}", "schedule={name: constant}",
    "trainer.precision=32-true", "trainer.max_epochs=5", TIME_GUARD,
)
#: mgrad_unet_acdc's `cpu` preset (96 px, batch 12, encoder 16..256, decoders 16, AdamW 1e-3 constant, fp32):
#: 5.5 s per batch (3 feedback passes), so the time guard ends the single epoch after ~88 batches
#: (ACDC has 110, Synapse 185); the constant learning rate has no schedule to cut short.
MGRAD_CPU_ACDC = ("preset=cpu", "trainer.max_epochs=1", TIME_GUARD)
#: mgrad_unet_synapse has no cpu preset: the same settings as overrides.
MGRAD_CPU = (
    "data.size=[96,96]", "data.batch_size=12", "data.num_workers=0",
    "model.kwargs.encoder_channels=[16,32,64,128,256]", "model.kwargs.width=16",
    "optim={name: adamw, lr: 0.001, weight_decay: 0.0001}", "schedule={name: constant}",
    "trainer.precision=32-true", "trainer.max_epochs=1", TIME_GUARD,
)

# ----------------------------------------------------------------------------------------- polyp
POLYP_COLUMNS = (
    Column("polyp:meanDic", "mDice"), Column("polyp:meanIoU", "mIoU"), Column("polyp:wFm", "Fwβ"),
    Column("polyp:Sm", "Sα"), Column("polyp:maxEm", "Eφmax"), Column("polyp:MAE", "MAE", percent=False),
)
M2SNET_LOST = ("m2snet.txt (arXiv 2303.10894v2, HTML) lost the numbers of every table (NOTES.md §6): the paper "
               "columns are blank; the rows follow the text of Sec. 4.5.")
KVASIR = ("preset=kvasir",)  # Kvasir-SEG folders (images/, masks/, splits/pranet_{train,test}.txt)
STRUCTURE_ONLY = "loss.terms=[{loss: structure, output: logits, weight: 1.0, kwargs: {legacy_pranet_bug: true}}]"
WITH_LOSSNET = ("loss.terms=[{loss: structure, output: logits, weight: 1.0, kwargs: {legacy_pranet_bug: true}}, "
                "{loss: lossnet, output: logits, weight: 0.1, kwargs: {weights: imagenet}}]")

MSNET_VS_M2SNET = Table(
    name="msnet-vs-m2snet",
    title="MSNet vs M2SNet on Kvasir-SEG (M2SNet Table 1, Kvasir column)",
    source=("M2SNet, arXiv 2303.10894, Table 1 (image polyp segmentation), Kvasir column. The table's numbers are "
            "lost in m2snet.txt; those shown are from NOTES.md §6: M2SNet mDice 91.2 (m2snet-benchmarks.txt, "
            "wizwand, and the SEPNet README) and mIoU 86.1, MSNet mDice 90.5 (SEPNet README, wangtong627/SEPNet)."),
    recipe="m2snet_polyp",
    sets=KVASIR,
    columns=POLYP_COLUMNS,
    rows=(
        Row("msnet", "MSNet", ("model.name=msnet",), {"polyp:meanDic": 90.5}),
        Row("m2snet", "M2SNet", (), {"polyp:meanDic": 91.2, "polyp:meanIoU": 86.1}),
    ),
    baseline="msnet",
    budgets={"cpu-small": POLYP_CPU, "paper": ()},
    notes=("Blank paper cells (MSNet mIoU; Fwβ, Sα, Eφmax, MAE of both): not in any source we hold.",
           "Paper numbers are PraNet's protocol on the PraNet split (train Kvasir 900 + ClinicDB 550); preset "
           "kvasir trains on the Kvasir 900 only."),
)

M2SNET_TABLE9 = Table(
    name="m2snet-table9",
    title="M2SNet Table 9: subtraction units, inter-layer aggregation, LossNet (Kvasir-SEG)",
    source="M2SNet, arXiv 2303.10894, Table 9 and Sec. 4.5 (ablation of SU, inter-layer aggregation, LossNet).",
    recipe="m2snet_polyp",
    sets=(*KVASIR, "model.name=msnet", STRUCTURE_ONLY),
    columns=POLYP_COLUMNS,
    rows=(
        Row("baseline", "Baseline (FPN)", ("model.kwargs.unit=none",)),
        Row("su2", "+SU₂", ("model.kwargs.unit=su", "model.kwargs.orders=1")),
        Row("su3", "+SU₃", ("model.kwargs.unit=su", "model.kwargs.orders=2")),
        Row("su4", "+SU₄", ("model.kwargs.unit=su", "model.kwargs.orders=3")),
        Row("su5", "+SU₅", ("model.kwargs.unit=su", "model.kwargs.orders=4")),
        Row("lossnet", "+L_f (LossNet)", ("model.kwargs.unit=su", "model.kwargs.orders=4", WITH_LOSSNET)),
        Row("au", "AU (addition units)", ("model.kwargs.unit=add", "model.kwargs.orders=4")),
    ),
    baseline="su5",
    budgets={"cpu-small": POLYP_CPU, "paper": ()},
    notes=(M2SNET_LOST,
           "Baseline row of the statistics: +SU₅ (the full pyramid, same loss as every row but +L_f).",
           "AU: addition units in place of SU, without LossNet (the text does not say whether its AU row has L_f).",
           "+L_f needs the VGG-16 ImageNet weights (a torchvision download on first use); offline the row is "
           "reported as failed."),
)

M2SNET_TABLE11 = Table(
    name="m2snet-table11",
    title="M2SNet Table 11: kernel sets and weights of the multi-scale subtraction unit (Kvasir-SEG)",
    source="M2SNet, arXiv 2303.10894, Table 11 and Sec. 4.5 (intra-layer kernel scales, all-ones vs Gaussian).",
    recipe="m2snet_polyp",
    sets=KVASIR,
    columns=POLYP_COLUMNS,
    rows=(
        Row("k1", "[1]", ("model.kwargs.kernel_sizes=[1]",)),
        Row("k13", "[1,3]", ("model.kwargs.kernel_sizes=[1,3]",)),
        Row("k135", "[1,3,5] (ours)", ("model.kwargs.kernel_sizes=[1,3,5]",)),
        Row("k1357", "[1,3,5,7]", ("model.kwargs.kernel_sizes=[1,3,5,7]",)),
        Row("gaussian", "[1,3,5], Gaussian weights", ("model.kwargs.kernel_sizes=[1,3,5]",
                                                      "model.kwargs.filter_weights=gaussian")),
    ),
    baseline="k135",
    budgets={"cpu-small": POLYP_CPU, "paper": ()},
    notes=(M2SNET_LOST, "The rows are our reading of the text (the table's layout is lost as well)."),
)

# ------------------------------------------------------------------------------------------ SNet
SNET_COLUMNS = (
    Column("avg:hd95", "HD", percent=False), Column("group:tissue", "Tissues"), Column("group:small", "Small"),
    Column("group:large", "Large"), Column("avg:dice", "Avg."),
)
SNET_FULL = {"avg:hd95": 15.74, "group:tissue": 90.19, "group:small": 77.01, "group:large": 88.73, "avg:dice": 83.05}

SNET_TABLE5 = Table(
    name="snet-table5",
    title="SNet Table 5: stagger vs unstagger fusion (Synapse)",
    source="SNet (Stagger Network), arXiv 2403.19177, Table 5 (snet.txt).",
    recipe="snet_synapse",
    columns=SNET_COLUMNS,
    rows=(
        Row("unstagger", "Unstagger", ("preset=unstagger",),
            {"avg:hd95": 30.11, "group:tissue": 89.56, "group:small": 70.29, "group:large": 86.54, "avg:dice": 78.79}),
        Row("stagger", "Stagger (ours)", ("model.kwargs.fusion=stagger",), SNET_FULL),
    ),
    baseline="stagger",
    budgets={"cpu-small": SNET_CPU, "paper": ()},
    stats=("dice", "hd95"),
    notes=("HD: the paper does not say which; its values fit HD95 (NOTES.md §3), here HD95 in voxels.",),
)

SNET_TABLE6 = Table(
    name="snet-table6",
    title="SNet Table 6: FEB, FFB and GAB (Synapse)",
    source="SNet (Stagger Network), arXiv 2403.19177, Table 6 (snet.txt).",
    recipe="snet_synapse",
    columns=SNET_COLUMNS[1:],
    rows=(
        Row("stagger", "Stagger", ("preset=stagger_only",),
            {"group:tissue": 87.11, "group:small": 67.21, "group:large": 84.22, "avg:dice": 76.81}),
        Row("feb", "+FEB", ("preset=stagger_feb",),
            {"group:tissue": 87.43, "group:small": 74.53, "group:large": 86.13, "avg:dice": 80.49}),
        Row("ffb", "+FFB", ("preset=no_gab",),
            {"group:tissue": 89.38, "group:small": 74.87, "group:large": 86.32, "avg:dice": 80.97}),
        Row("gab", "+GAB (SNet)", ("model.kwargs.gab=true",), {k: v for k, v in SNET_FULL.items() if k != "avg:hd95"}),
    ),
    baseline="gab",
    budgets={"cpu-small": SNET_CPU, "paper": ()},
)

# ----------------------------------------------------------------------------------------- MGRAD
MGRAD_ABLATION = Table(
    name="mgrad-ablation",
    title="MGRAD-UNet ablation: RFB, SideConv and the loss (Synapse)",
    source="MGRAD-UNet (Yan et al., Sci. Rep. 2024), Table 3 (RFB / SideConv) and Table 5 (loss), mgrad-unet.txt.",
    recipe="mgrad_unet_synapse",
    columns=(Column("avg:dice", "Dice"), Column("avg:iou", "mIoU"), Column("avg:hd95", "HD95", percent=False),
             Column("avg:assd", "ASD", percent=False)),
    rows=(
        Row("full", "RFB + SideConv, aggregated loss (ours)", (),
            {"avg:dice": 83.33, "avg:iou": 74.68, "avg:hd95": 16.67, "avg:assd": 3.26}),
        Row("no_sideconv", "RFB, no SideConv", ("preset=no_sideconv",),
            {"avg:dice": 83.00, "avg:iou": 74.57, "avg:hd95": 18.80, "avg:assd": 3.49}),
        Row("no_rfb", "SideConv, no RFB", ("preset=no_rfb",),
            {"avg:dice": 82.61, "avg:iou": 73.55, "avg:hd95": 19.54, "avg:assd": 3.44}),
        Row("neither", "no RFB, no SideConv", ("preset=no_rfb_sideconv",),
            {"avg:dice": 82.40, "avg:iou": 73.45, "avg:hd95": 18.58, "avg:assd": 3.51}),
        Row("weighted", "weighted loss (Table 5)", ("preset=weighted",),
            {"avg:dice": 83.14, "avg:iou": 74.68, "avg:hd95": 23.16, "avg:assd": None}),
    ),
    baseline="full",
    budgets={"cpu-small": MGRAD_CPU, "paper": ()},
    stats=("dice", "hd95"),
    notes=("Full row: Table 3's numbers; Table 5 prints the same model with mIoU 74.73 (Table 3: 74.68).",
           "Weighted-loss ASD: not in Table 5 (blank).",
           "ASD: CASCADE/MGRAD's evaluation computes the symmetric ASSD (NOTES.md §5.1), so the column reads assd."),
)

MGRAD_ABLATION_ACDC = Table(
    name="mgrad-ablation-acdc",
    title="MGRAD-UNet ablation: RFB and SideConv (ACDC)",
    source="MGRAD-UNet (Yan et al., Sci. Rep. 2024), Table 4 (ACDC), mgrad-unet.txt.",
    recipe="mgrad_unet_acdc",
    columns=(Column("avg:dice", "Average"), Column("class:RV:dice", "RV"), Column("class:Myo:dice", "Myo"),
             Column("class:LV:dice", "LV")),
    rows=(
        Row("full", "RFB + SideConv (ours)", (),
            {"avg:dice": 92.13, "class:RV:dice": 90.42, "class:Myo:dice": 90.00, "class:LV:dice": 95.98}),
        Row("no_sideconv", "RFB, no SideConv", ("preset=no_sideconv",),
            {"avg:dice": 91.70, "class:RV:dice": 90.09, "class:Myo:dice": 89.62, "class:LV:dice": 95.39}),
        Row("no_rfb", "SideConv, no RFB", ("preset=no_rfb",),
            {"avg:dice": 91.62, "class:RV:dice": 90.05, "class:Myo:dice": 89.74, "class:LV:dice": 94.87}),
        Row("neither", "no RFB, no SideConv", ("preset=no_rfb_sideconv",),
            {"avg:dice": 91.12, "class:RV:dice": 89.83, "class:Myo:dice": 89.45, "class:LV:dice": 93.88}),
        Row("aggregated", "aggregated loss", ("preset=aggregated",)),
    ),
    baseline="full",
    budgets={"cpu-small": MGRAD_CPU_ACDC, "paper": ()},
    notes=("The ACDC recipe trains with the weighted loss (the author's train_ACDC.py); the aggregated-loss row "
           "has no paper numbers (Table 5 is on Synapse only).",),
)

TABLES: dict[str, Table] = {t.name: t for t in (
    MSNET_VS_M2SNET, M2SNET_TABLE9, M2SNET_TABLE11, SNET_TABLE5, SNET_TABLE6, MGRAD_ABLATION, MGRAD_ABLATION_ACDC,
)}
