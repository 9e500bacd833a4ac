"""``medseg --version``, ``medseg models [PATTERN]`` and ``medseg recipes [show]``: fast, torch-free commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import load_config, recipe_names

runner = CliRunner()
SRC = str(Path(medseg.__file__).parents[1])


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200")
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "medseg.cli", *args], capture_output=True, text=True, env=env)
    return res, time.perf_counter() - t


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"medseg {medseg.__version__}"


def test_models_answers_in_under_2_s_and_filters():
    res, seconds = _cli("models", "*unet*")
    assert res.returncode == 0, res.stderr
    assert seconds < 2.0, f"medseg models took {seconds:.1f} s"
    listed = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("│ ") and line.split()[1] != "│"]
    assert listed == ["attention_unet", "mda_unet", "mgrad_unet", "timm_unet", "unet", "unetpp"]
    assert "31,113,217" in res.stdout  # unet's parameters, from the table
    out = runner.invoke(app, ["models", "--no-params"]).output
    assert "msnet" in out and "31,113,217" not in out


def test_models_unmatched_pattern_is_a_one_line_error():
    res = runner.invoke(app, ["models", "nope*"])
    assert res.exit_code == 2 and "no model matches 'nope*'; models: attention_unet" in res.output


def test_recipes_lists_every_recipe_on_one_line():
    res = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()[1:]
    assert [line.split()[0] for line in lines] == recipe_names()
    quick = next(line for line in lines if line.startswith("quickstart"))
    assert "The default run: SNet" in quick
    mgrad = next(line for line in lines if line.startswith("mgrad_unet_synapse"))
    assert "Sci. Rep. 2024" in mgrad  # an abbreviation does not end the sentence


def test_recipes_show_prints_the_resolved_config():
    args = ["recipes", "show", "m2snet_polyp", "--preset", "cpu", "--set", "optim.lr=0.123"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown == load_config("m2snet_polyp", ["preset=cpu", "optim.lr=0.123"]).to_dict()
    assert shown["optim"]["lr"] == 0.123
    assert shown != load_config("m2snet_polyp").to_dict()  # the preset changed something


def test_recipes_show_errors_are_one_line():
    for args, needle in (
        (["recipes", "show", "nope"], "unknown recipe 'nope'"),
        (["recipes", "show", "quickstart", "--preset", "x"], "unknown preset 'x'"),
        (["recipes", "show", "quickstart", "--set", "optim.lr"], "--set expects key=value"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and needle in res.output, (args, res.output)
