"""The ``medseg`` command: a thin layer over :mod:`medseg.engine`.

Heavy libraries (torch, MONAI, Lightning) are imported inside the commands, so ``medseg --help`` and
argument errors answer at once. A mistake a user can make (unknown recipe/model, missing folder,
bad data) prints one line and exits with code 2, without a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="medseg",
    help="Medical image segmentation: train, evaluate and predict with the papers' models and protocols.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data utilities: built-in synthetic data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
export_app = typer.Typer(help="Export a trained model.", no_args_is_help=True)
app.add_typer(export_app, name="export")
console = Console(stderr=False)
err_console = Console(stderr=True)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from medseg.config import ConfigError
    from medseg.utils import MedsegError

    return (ConfigError, MedsegError, FileNotFoundError)


def _error_line(msg: str) -> None:
    from rich.markup import escape

    from medseg.utils import printable

    err_console.print(f"[bold red]error:[/] {escape(printable(msg))}", highlight=False, soft_wrap=True)


def _fail(msg: str, code: int = 2) -> None:
    _error_line(msg)
    raise typer.Exit(code=code)


def _exit_if_failed(failures: list[str], total: int) -> None:
    """List the inputs that failed (one line each) and exit 1 when there are any."""
    if not failures:
        return
    for line in failures:
        _error_line(line)
    err_console.print(f"{len(failures)} of {total} input(s) failed (listed above)")
    raise typer.Exit(code=1)


FAIL_FAST_HELP = "Stop at the first bad input (exit 2) instead of going on and listing the failures (exit 1)."
NONFINITE_HELP = "Replace NaN/Inf input values with 0 (one warning per file) instead of failing that input."


# ------------------------------------------------------------------------------------------ train
@app.command()
def train(
    recipe: Annotated[str, typer.Option(help="Built-in recipe name or a YAML file.")] = "quickstart",
    data: Annotated[Path | None, typer.Option(help="Data folder (replaces the recipe's data root / built-in data).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (see `medseg models`).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<recipe>-<time>).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value (repeatable).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted run in this folder (--set may extend trainer.max_epochs and similar).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Use --out even if it holds a run: the old folder is moved to <out>.replaced-<time>.")] = False,
    devices: Annotated[str | None, typer.Option(help="Devices per node (Lightning), e.g. 2 or auto.")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Number of nodes (multi-node DDP).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy, e.g. ddp.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto.")] = None,
    folds: Annotated[int | None, typer.Option(help="Cross-validation with K folds (with --fold); --out is the CV folder (default runs/<recipe>-cv<K>).")] = None,
    fold: Annotated[str | None, typer.Option(help="Fold to train: 0..K-1, or all (one after another; finished folds are skipped, an interrupted one resumes).")] = None,
    splits: Annotated[Path | None, typer.Option(help="With --folds: use this splits_final.json (nnU-Net folds) instead of making the folds.")] = None,
    groups: Annotated[Path | None, typer.Option(help="With --folds: '<case id> <group>' lines or a JSON object keeping each group in one fold (default DATA/groups.txt|.json, else patient/volume/video from the case ids).")] = None,
) -> None:
    """Train a model. With no arguments: the `quickstart` recipe on built-in phantom CT data."""
    fold_spec = _check_cv_options(folds, fold, splits, groups, resume, overwrite)
    overrides = list(set_ or [])
    if resume is not None:
        given = [flag for flag, v in (("--data", data), ("--model", model), ("--out", out)) if v is not None]
        if recipe != "quickstart":
            given.insert(0, "--recipe")
        if overwrite:
            given.append("--overwrite")
        if given:
            _fail(f"--resume continues the run as it was configured: {', '.join(given)} cannot be given with it")
    if data is not None:
        overrides += [f"data.root={data}", "data.builtin=null"]
    if model is not None:
        overrides += [f"model.name={model}", "model.kwargs={}"]
    for key, value in (("devices", devices), ("num_nodes", num_nodes), ("strategy", strategy), ("accelerator", accelerator)):
        if value is not None:
            overrides.append(f"trainer.{key}={value}")
    cfg = None
    try:
        from medseg.config import load_config
        from medseg.engine.safety import DivergenceError, TrainingInterrupted
        from medseg.engine.train import fit

        if resume is not None:
            run_dir = fit(None, resume=resume, overrides=overrides)
        elif folds is not None:
            from medseg.experiments.folds import train_cv

            cfg = load_config(recipe, overrides)
            _check_model_name(cfg.model.name)
            console.print(f"[bold]medseg train[/] recipe [cyan]{cfg.name}[/] model [cyan]{cfg.model.name}[/], "
                          f"{folds}-fold cross-validation, fold {fold}")
            cv_dir, summary = train_cv(cfg, folds=folds, fold=fold_spec, out=out, splits=splits, groups=groups)
            if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
                _print_cv_summary(cv_dir, summary)
            return
        else:
            cfg = load_config(recipe, overrides)
            _check_model_name(cfg.model.name)
            console.print(f"[bold]medseg train[/] recipe [cyan]{cfg.name}[/] model [cyan]{cfg.model.name}[/]")
            run_dir = fit(cfg, out=out, overwrite=overwrite)
    except (DivergenceError, TrainingInterrupted) as err:
        _fail(str(err), code=getattr(err, "exit_code", 1))
    except _user_error_types() as err:
        _fail(str(err) + _without_weights_hint(err, cfg))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        _print_train_summary(run_dir)


def _check_cv_options(folds: int | None, fold: str | None, splits: Path | None, groups: Path | None,
                      resume: Path | None, overwrite: bool) -> int | None:
    """The fold to train (None: all) after checking the cross-validation options go together."""
    if folds is None:
        if fold is not None or splits is not None or groups is not None:
            _fail("--fold, --splits and --groups go with --folds K")
        return None
    if folds < 2:
        _fail(f"--folds must be at least 2, got {folds}")
    if fold is None:
        _fail("--folds needs --fold: a fold number 0..K-1, or all")
    if resume is not None or overwrite:
        _fail("--folds resumes an interrupted fold by itself and never overwrites: --resume / --overwrite do not apply")
    if fold == "all":
        return None
    if not fold.isdigit() or int(fold) >= folds:
        _fail(f"--fold must be 0..{folds - 1} or all, got {fold!r}")
    return int(fold)


def _print_cv_summary(cv_dir: Path, summary: dict | None) -> None:
    if summary is None:
        console.print(f"[green]done[/]; the CV summary is written once every fold is trained\nCV folder: {cv_dir}")
        return
    from rich.markdown import Markdown

    console.print(Markdown(summary["markdown"]))
    console.print(f"CV folder: {cv_dir} (cv_summary.md, cv_summary.json)")


def _without_weights_hint(err: BaseException, cfg: object) -> str:
    """For weights that could not be fetched: the recipe's preset that trains without them."""
    from medseg.models._weights import WeightLoadError

    if not isinstance(err, WeightLoadError) or "could not fetch" not in str(err) or cfg is None:
        return ""
    presets = getattr(cfg, "presets", {}) or {}
    offline = [n for n, p in presets.items() if "pretrained" in p.get("model", {}).get("kwargs", {})
               and not p["model"]["kwargs"]["pretrained"]]
    if offline:
        name = "offline" if "offline" in offline else offline[0]
        return f"; or train without downloads (random backbone, not the paper's setting): --set preset={name}"
    return "; or train from a random backbone: --set model.kwargs.pretrained=null"


def _check_model_name(name: str) -> None:
    from medseg.models import model_names

    if name not in model_names():
        from medseg.utils import MedsegError

        raise MedsegError(f"unknown model {name!r}; valid names: {', '.join(model_names())}")


def _print_train_summary(run_dir: Path) -> None:
    import json

    p = run_dir / "summary.json"
    if not p.is_file():
        return
    s = json.loads(p.read_text())
    best = s.get("best_val")
    if s.get("status") == "stopped_early":
        err_console.print(f"[bold yellow]warning:[/] {s.get('note')}", highlight=False, soft_wrap=True)
    console.print(
        f"[green]done[/] in {s.get('train_seconds', 0):.0f} s: epoch {s.get('epochs')}"
        + (f"/{s['max_epochs']}" if (s.get("max_epochs") or 0) > 0 else "") + f", {s.get('steps')} steps"
        + (f", best validation {s.get('val_metric', 'dice')} {best:.4f}" if best is not None else "")
        + f"\nrun folder: {run_dir}"
    )


PRECISION_HELP = ("fp32, bf16 (autocast; where the CPU has avx512_bf16/amx_bf16, else fp32 with a note) or auto "
                  "(bf16 where supported, for models whose bf16 masks were checked on a trained run: "
                  "benchmarks/results/bf16_agreement.md).")


def _check_precision(precision: str) -> None:
    if precision not in ("fp32", "bf16", "auto"):
        _fail(f"--precision must be fp32, bf16 or auto, got {precision!r}")


# --------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    run_dir: Annotated[list[Path] | None, typer.Argument(help="A run folder written by `medseg train`; several runs or a cross-validation folder evaluate their ensemble (mean probabilities). Not with --pred/--truth.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data folder (default: the one the run trained on).")] = None,
    split: Annotated[str | None, typer.Option(help="Split(s) to evaluate (default: the recipe's test split); comma-separated for several, one table row each; with the PraNet layout `test` means every TestDataset/<set>.")] = None,
    mode: Annotated[str | None, typer.Option(help="Empty-mask rule: paper (TransUNet's), strict, or auto (paper for volumes, strict per image); default: the recipe's eval.mode.")] = None,
    protocol: Annotated[str | None, typer.Option(help="auto, image, volume or polyp.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last or a .ckpt path.")] = "best",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN_DIR/eval/<split>-<protocol>-<mode>[-tta][-pooled]; several splits: one sub-folder each). Earlier evaluation files in it are replaced, with a warning.")] = None,
    save_predictions: Annotated[bool, typer.Option(help="Also write the predicted masks / volumes.")] = False,
    fast: Annotated[bool | None, typer.Option(help="Fast inference path: Conv+BN folded, same results (default: eval.fast).")] = None,
    compile: Annotated[bool, typer.Option(help="Also torch.compile the model (falls back to eager).")] = False,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "fp32",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a data.* or eval.* value of the run's config: key=value (repeatable).")] = None,
    fail_fast: Annotated[bool, typer.Option(help=FAIL_FAST_HELP)] = False,
    allow_nonfinite: Annotated[bool, typer.Option(help=NONFINITE_HELP)] = False,
    pred: Annotated[Path | None, typer.Option(help="Evaluate this folder of predicted masks (PNG or NIfTI) instead of a run; needs --truth.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Reference masks for --pred, matched by file stem / nnU-Net case name.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes with background for --pred/--truth (default: from the reference masks).")] = None,
) -> None:
    """Evaluate a trained run (or an exported .onnx file) on one or several splits, or a folder of predictions
    (--pred DIR --truth DIR; default output <PRED>-eval/<protocol>-<mode>/): per-case CSV, summary JSON, Markdown table.
    An ensemble (RUN1 RUN2 ... or CV_DIR) goes to CV_DIR/eval/ensemble-<split>-... or RUN1/eval/ensemble-<id>-<split>-..."""
    run_dir = run_dir or None
    if (pred is None) != (truth is None):
        _fail("--pred and --truth go together")
    if pred is not None and (run_dir is not None or data is not None or split is not None):
        _fail("--pred/--truth evaluate a folder of predictions: RUN_DIR, --data and --split do not apply")
    if pred is None and run_dir is None:
        _fail("give a RUN_DIR, or --pred DIR --truth DIR")
    if num_classes is not None and (pred is None or num_classes < 2):
        _fail("--num-classes goes with --pred/--truth and counts the background (>= 2)")
    if mode is not None and mode not in ("auto", "paper", "strict"):
        _fail(f"--mode must be 'auto', 'paper' or 'strict', got {mode!r}")
    if protocol is not None and protocol not in ("auto", "image", "volume", "polyp"):
        _fail(f"--protocol must be auto, image, volume or polyp, got {protocol!r}")
    _check_precision(precision)
    try:
        if pred is not None:
            from medseg.engine.evaluate_folder import evaluate_folder

            summary = evaluate_folder(pred, truth, num_classes=num_classes, protocol=protocol, mode=mode, out_dir=out,
                                      overrides=set_, fail_fast=fail_fast)
        else:
            from medseg.engine.evaluate import evaluate_run

            summary = evaluate_run(run_dir, data=data, split=split, mode=mode, protocol=protocol,
                                   checkpoint=checkpoint, device=device, out_dir=out, save_predictions=save_predictions,
                                   fast=fast, compile=compile, overrides=set_, fail_fast=fail_fast,
                                   allow_nonfinite=allow_nonfinite, precision=precision)
    except _user_error_types() as err:
        _fail(str(err))
    from medseg.tables import print_markdown

    print_markdown(console, summary["markdown"])
    console.print(f"{summary['cases']} cases in {summary['seconds']:.1f} s; files in {summary['out_dir']}")
    _exit_if_failed(summary["failed"], summary["cases"] + len(summary["failed"]))


# ---------------------------------------------------------------------------------------- compare
@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Evaluated run folders or evaluation folders; the first is the baseline. Join seeds of one recipe with commas: A1,A2,A3.")],
    metric: Annotated[str, typer.Option(help="A column of cases.csv: dice, iou, hd95, asd, precision, ...")] = "dice",
    split: Annotated[str, typer.Option(help="Which evaluation of a run folder: RUN/eval/<split>-*.")] = "test",
    out: Annotated[Path, typer.Option(help="Folder for compare.md, compare.json and compare.png.")] = Path("compare"),
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
) -> None:
    """Paired per-case comparison with the first run: mean difference, bootstrap 95 % CI, Wilcoxon p, wins/ties/losses."""
    groups = [[Path(p) for p in r.split(",") if p] for r in runs]
    try:
        from medseg.experiments.compare import compare as compare_runs
        from medseg.experiments.compare import to_markdown, write

        result = compare_runs(groups, metric=metric, split=split, seed=seed)
        files = write(result, out)
    except _user_error_types() as err:
        _fail(str(err))
    from medseg.tables import print_markdown

    print_markdown(console, to_markdown(result))
    console.print(f"files in {out}: {', '.join(p.name for p in files.values())}")


# -------------------------------------------------------------------------------------- reproduce
@app.command()
def reproduce(
    name: Annotated[str | None, typer.Argument(help="Paper table to reproduce (see --list).")] = None,
    data: Annotated[Path | None, typer.Option(help="Data folder for every run (default: the recipe's).")] = None,
    budget: Annotated[str, typer.Option(help="cpu-small (a row trains <= 8 min on a 2-core CPU) or paper (the recipe as it is).")] = "cpu-small",
    seeds: Annotated[int, typer.Option(help="Runs per row, with seed=0..N-1; the table shows mean ± sd.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Parent folder of the grid (default reproduce/<name>-<budget>); run again to continue it.")] = None,
    recipe: Annotated[str | None, typer.Option(help="Run the grid on another recipe (e.g. snet_acdc); the paper numbers are then not shown.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Extra override for every run: key=value (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="Evaluation device: cpu or cuda.")] = "cpu",
    list_: Annotated[bool, typer.Option("--list", help="List the tables and exit.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the grid's train / evaluate commands and exit.")] = False,
) -> None:
    """Reproduce a paper table: train its grid of runs (resumable), evaluate them, and write the table
    (Markdown + JSON) with the paper's numbers beside ours and paired statistics against the baseline row."""
    from medseg.experiments.tables import TABLES

    if list_:
        from rich.table import Table as RichTable

        listing = RichTable("table", "rows", "recipe", "what", box=None, pad_edge=False)
        for t in TABLES.values():
            listing.add_row(t.name, str(len(t.rows)), t.recipe, t.title)
        console.print(listing)
        return
    if name is None:
        _fail(f"give a table name; tables: {', '.join(TABLES)} (--list describes them)")
    try:
        from medseg.experiments import reproduce as rp

        table = rp.get_table(name)
        if dry_run:
            target = out or rp.default_out(table, budget)
            runs = rp.plan(table, out=target, budget=budget, seeds=seeds, data=data, recipe=recipe, extra=set_ or [])
            print(f"# {table.title}\n# {table.source}\n# baseline row: {table.baseline}; {rp.estimate(table, runs, budget)}")
            print("\n".join(rp.commands(runs, device)))
            for line in rp.check_configs(runs):  # a run whose settings do not validate would fail its row
                print(f"# invalid: {line}")
            return
        result = rp.reproduce(table, data=data, out=out, budget=budget, seeds=seeds, recipe=recipe,
                              extra=set_ or [], device=device)
    except _user_error_types() as err:  # TrainingInterrupted (Ctrl-C) carries its exit code 130 / 143
        code = getattr(err, "exit_code", 2)
        _fail(str(err) + ("; run the same `medseg reproduce` command to continue the grid" if code != 2 else ""), code)
    from medseg.tables import print_markdown

    print_markdown(console, Path(result["files"]["markdown"]).read_text())
    console.print(f"table written to {result['files']['markdown']} and {result['files']['json']}")
    if result["failed_runs"]:
        _fail(f"{result['failed_runs']} run(s) failed (listed in the table)", code=1)


# ---------------------------------------------------------------------------------------- predict
@app.command()
def predict(
    run_dir: Annotated[list[Path], typer.Argument(help="A run folder written by `medseg train`, or an exported .onnx file; several, or a cross-validation folder: their ensemble (mean probabilities).")],
    input: Annotated[Path, typer.Option("--input", help="An image / volume file or a folder of them.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the predicted masks.")],
    overlay: Annotated[bool, typer.Option(help="Also write image | prediction overlays.")] = False,
    probabilities: Annotated[bool, typer.Option(help="Also write probability maps.")] = False,
    checkpoint: Annotated[str, typer.Option(help="best, last or a .ckpt path.")] = "best",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    fast: Annotated[bool | None, typer.Option(help="Fast inference path: Conv+BN folded, same results (default: eval.fast).")] = None,
    compile: Annotated[bool, typer.Option(help="Also torch.compile the model (falls back to eager).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a data.* or eval.* value of the run's config: key=value (repeatable).")] = None,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP)] = "fp32",
    fail_fast: Annotated[bool, typer.Option(help=FAIL_FAST_HELP)] = False,
    allow_nonfinite: Annotated[bool, typer.Option(help=NONFINITE_HELP)] = False,
) -> None:
    """Predict masks: one PNG per image (same stem, own size) or one NIfTI per volume; several runs (or a CV
    folder) predict together, averaging their probabilities."""
    _check_precision(precision)
    try:
        from medseg.engine.predict_folder import predict_paths

        written, failures = predict_paths(run_dir, input, output, overlay=overlay, probabilities=probabilities,
                                          checkpoint=checkpoint, device=device, fast=fast, compile=compile,
                                          fail_fast=fail_fast, allow_nonfinite=allow_nonfinite, overrides=set_,
                                          precision=precision)
    except _user_error_types() as err:
        _fail(str(err))
    console.print(f"wrote {len(written)} prediction(s) to {output}")
    _exit_if_failed(failures, len(written) + len(failures))


# ------------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `medseg train`, or an exported .onnx file.")],
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 7860,
    host: Annotated[str, typer.Option(help="Interface to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (the network).")] = "127.0.0.1",
    checkpoint: Annotated[str, typer.Option(help="best, last or a .ckpt path.")] = "best",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Web demo (Gradio, extra `demo`): upload an image or NIfTI volume, see the contours and class areas, download the mask."""
    from medseg.app.demo import INSTALL_HINT, gradio_available

    if not gradio_available():
        _fail(INSTALL_HINT)
    if not (1 <= port <= 65535):
        _fail(f"--port must be 1..65535, got {port}")
    try:
        from medseg.app.demo import serve
        from medseg.app.session import DemoSession

        session = DemoSession(run_dir, checkpoint=checkpoint, device=device)
        console.print(f"medseg demo of {run_dir} on http://{host}:{port} (Ctrl+C stops it)")
        serve(session, host=host, port=port)
    except _user_error_types() as err:
        _fail(str(err))
    except OSError as err:  # the port is taken
        _fail(f"cannot serve on {host}:{port} (is the port taken? pick another with --port): {str(err).split('. ')[0]}")


# ----------------------------------------------------------------------------------------- models
@app.command()
def models(
    pattern: Annotated[str | None, typer.Argument(help="Name filter with shell wildcards, e.g. '*unet*'.")] = None,
    params: Annotated[bool, typer.Option(help="Show parameter counts (3 -> 1 channels).")] = True,
) -> None:
    """List the registered models with paper, default input size and parameter count."""
    from rich.table import Table

    from medseg.catalog import match_names, read_catalog

    rows = {r["name"]: r for r in read_catalog()}  # the package's table: no model is built or imported
    names = match_names(list(rows), pattern or "")
    if not names:
        _fail(f"no model matches {pattern!r}; models: {', '.join(rows)}")
    table = Table("name", "paper", "default size", "stride", "params (3->1)")
    for row in (rows[n] for n in names):
        size = "x".join(str(s) for s in row["default_size"])
        table.add_row(row["name"], row["paper"], size, str(row["stride"]), f"{row['params']:,}" if params else "-")
    console.print(table)


# ---------------------------------------------------------------------------------------- recipes
recipes_app = typer.Typer(help="Built-in recipes: list them, or show one resolved.")
app.add_typer(recipes_app, name="recipes")


def _first_sentence(text: str) -> str:
    """The first sentence of ``text``, whitespace collapsed (``Sci. Rep.`` does not end it)."""
    import re

    return re.split(r"(?<=[a-z0-9)]{3}[.])\s", " ".join(text.split()), maxsplit=1)[0]


@recipes_app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    """List the built-in recipes with a one-line description each (`medseg recipes show NAME` for the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    import textwrap

    from rich.table import Table

    from medseg.config import load_config, recipe_names

    names = recipe_names()
    table = Table(box=None, pad_edge=False)
    table.add_column("recipe", style="cyan", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("description", no_wrap=True)  # one line each, shortened between words (never mid-word)
    room = max(20, console.width - max(map(len, names)) - 1)
    for name in names:
        table.add_row(name, textwrap.shorten(_first_sentence(load_config(name).description), room, placeholder=" …",
                                                break_on_hyphens=False, break_long_words=False))
    console.print(table)


@recipes_app.command("show")
def recipes_show(
    name: Annotated[str, typer.Argument(help="Built-in recipe name or a YAML file.")],
    preset: Annotated[list[str] | None, typer.Option("--preset", help="Apply this preset of the recipe (repeatable).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value (repeatable).")] = None,
) -> None:
    """Print a recipe's resolved configuration as YAML (what `medseg train` would save as config.yaml)."""
    import yaml

    overrides = ([f"preset=[{', '.join(preset)}]"] if preset else []) + list(set_ or [])
    try:
        from medseg.config import load_config

        cfg = load_config(name, overrides)
    except _user_error_types() as err:
        _fail(str(err))
    from medseg.config import recipe_names

    if name in recipe_names():  # built-in recipes have a protocol card (a YAML comment: the output stays YAML)
        print(f"# protocol card: docs/protocols/{name}.md")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")


# ------------------------------------------------------------------------------------------ stats
def _parse_size(text: str | None) -> tuple[int, int] | None:
    """``352`` or ``352x320`` (H x W); ``None`` keeps each model's default (paper) size."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) <= 0:
        _fail(f"--size must be N or HxW (positive integers), got {text!r}")
    return dims[0], dims[1]


@app.command()
def stats(
    models: Annotated[list[str] | None, typer.Option("--models", help="Model names (repeat or comma-separate), or all.")] = None,
    size: Annotated[str | None, typer.Option(help="Input size N or HxW (default: each model's paper size).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size of the throughput and peak-memory measurement.")] = 4,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    format: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
    amp: Annotated[str | None, typer.Option(help="Autocast dtype: bf16 or fp16 (default: fp32).")] = None,
    precision: Annotated[str, typer.Option(help=PRECISION_HELP + " Same as --amp bf16 where bf16 is used.")] = "fp32",
    channels_last: Annotated[bool | None, typer.Option(help="channels_last memory format (default: with the fast path).")] = None,
    fast: Annotated[bool, typer.Option(help="Measure the fast inference path (else the plain model).")] = True,
    compile: Annotated[bool, typer.Option(help="Also torch.compile the fast path.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed forwards per measurement (median).")] = 7,
    in_channels: Annotated[int | None, typer.Option(help="Input channels (default: the paper's setting).")] = None,
    out_channels: Annotated[int | None, typer.Option(help="Output channels (default: the paper's setting).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table to this file.")] = None,
) -> None:
    """Parameters, GMACs, latency, throughput, peak memory and GFLOP/s (vs a matrix product) per model."""
    if format not in ("md", "json"):
        _fail(f"--format must be md or json, got {format!r}")
    if batch < 1 or repeats < 1:
        _fail("--batch and --repeats must be >= 1")
    _check_precision(precision)
    hw = _parse_size(size)
    names = [n.strip() for item in (models or ["all"]) for n in item.split(",") if n.strip()]
    try:
        from medseg.models import model_names
        from medseg.stats import model_stats, resolve_device, stats_table
        from medseg.utils import atomic_write_text

        valid = model_names()
        if names == ["all"]:
            names = valid
        for n in names:
            _check_model_name(n)
        dev = resolve_device(device)
        if precision != "fp32" and amp is not None:
            _fail("give --precision or --amp, not both")
        from medseg.engine.fast import resolve_inference_precision

        rows = []
        for n in names:
            err_console.print(f"measuring {n} ...", highlight=False)
            if precision != "fp32":  # per model: auto is bf16 only for models verified in bf16
                amp = "bf16" if resolve_inference_precision(precision, dev, n) == "bf16" else None
            rows.append(model_stats(n, size=hw, batch=batch, device=dev, in_channels=in_channels,
                                    out_channels=out_channels, amp=amp, channels_last=channels_last, fast=fast,
                                    compile=compile, repeats=repeats))
        text = stats_table(rows, fmt=format)
        if out is not None:
            atomic_write_text(out, text)
    except (*_user_error_types(), ValueError) as err:
        _fail(str(err))
    if format == "json":
        print(text)
    else:
        from medseg.tables import print_markdown

        print_markdown(console, text)


# ----------------------------------------------------------------------------------------- export
@export_app.command("onnx")
def export_onnx_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `medseg train`.")],
    out: Annotated[Path, typer.Option(help="The .onnx file to write.")],
    checkpoint: Annotated[str, typer.Option(help="best, last or a .ckpt path.")] = "best",
    dynamic: Annotated[bool, typer.Option(help="Free batch size and H, W (multiples of the model's stride).")] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
) -> None:
    """Export a run's model (logits) to ONNX; `medseg predict FILE.onnx` and `evaluate` accept the file."""
    try:
        from medseg.export import export_onnx

        path = export_onnx(run_dir, out, checkpoint=checkpoint, dynamic=dynamic, opset=opset)
    except _user_error_types() as err:
        _fail(str(err))
    console.print(f"wrote {path}")


# ------------------------------------------------------------------------------------------- data
@data_app.command("builtin")
def data_builtin(
    name: Annotated[str, typer.Argument(help="phantom-ct or phantom-endo.")],
    out: Annotated[Path, typer.Option(help="Folder to write.")],
    seed: Annotated[int, typer.Option(help="Random seed: another seed gives different, unseen cases.")] = 0,
    count: Annotated[int | None, typer.Option(help="Number of 2D cases.")] = None,
) -> None:
    """Write a built-in synthetic data set in the same on-disk format as real data."""
    from medseg.data.builtin import BUILTIN_DATASETS, generate

    if name not in BUILTIN_DATASETS:
        _fail(f"unknown built-in data set {name!r}; valid: {', '.join(BUILTIN_DATASETS)}")
    try:
        root = generate(name, out, seed=seed, count=count)
    except _user_error_types() as err:
        _fail(str(err))
    console.print(f"wrote {name} (seed {seed}) to {root}")


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="The data folder to check.")],
    recipe: Annotated[str, typer.Option(help="Recipe whose data settings (format, classes, channels, splits) apply.")] = "quickstart",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: key=value (repeatable).")] = None,
) -> None:
    """Read every training and validation file as `medseg train` would; list every bad one (exit 2 if any)."""
    try:
        from medseg.config import load_config
        from medseg.engine.datamodule import SegDataModule, prepare_data_root

        cfg = load_config(recipe, list(set_ or []) + [f"data.root={root}", "data.builtin=null"])
        cfg = cfg.model_copy(update={"data": prepare_data_root(cfg.data, model=cfg.model)})
        dm = SegDataModule(cfg)
        dm.setup("fit")
        problems = dm.preflight()
    except _user_error_types() as err:
        _fail(str(err))
    from rich.markup import escape

    n_train = len(dm.train_ds.ids)
    n_val = len(dm.val_ds.ids) if dm.val_ds is not None else 0
    for line in problems:
        err_console.print(f"[bold red]bad:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if problems:
        _fail(f"{root}: {len(problems)} of {n_train + n_val} cases failed the check")
    console.print(f"{root}: {n_train} training and {n_val} validation cases read, all good")


def _version(value: bool) -> None:
    if value:
        from medseg import __version__

        print(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Medical image segmentation: train, evaluate and predict with the papers' models and protocols."""


class _LogFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr``: a progress bar redirects it while drawing, so lines go above the bar."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def _show_medseg_logs() -> None:
    """medseg's INFO and WARNING lines on stderr, one line each (libraries' loggers stay quiet)."""
    handler = _StderrHandler()
    handler.setFormatter(_LogFormat())
    log = logging.getLogger("medseg")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main() -> None:
    """Console entry point."""
    _show_medseg_logs()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
