"""The README's own-data example, run as written on a greyscale 3-class folder (issue #16 item 4).

Before the ``unet`` recipe, the example (``--recipe unet_kvasir``) failed on such a folder three times:
split names from PraNet, ImageNet normalisation for one channel, the polyp protocol for three classes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from medseg.cli import app
from tiny_runs import ONE_EPOCH, TINY_UNET_WIDTHS, make_grey_classes

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_own_data_command() -> list[str]:
    """The ``medseg train`` line of the README's "Training on your own data" section, split like a shell."""
    text = README.read_text()
    section = text.split("### Training on your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: no bash block in 'Training on your own data'"
    lines = [ln for ln in block.group(1).splitlines() if ln.startswith("medseg train")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].split("  #")[0])


def test_readme_own_data_example_runs_as_written_on_a_grey_3_class_folder(tmp_path):
    args = readme_own_data_command()
    assert args[:2] == ["medseg", "train"] and "--data" in args
    data = make_grey_classes(tmp_path / "my_lesions")
    args[args.index("--data") + 1] = str(data)  # the README's placeholder folder -> ours
    run = tmp_path / "run"
    tiny = [x for s in [TINY_UNET_WIDTHS, *ONE_EPOCH] for x in ("--set", s)]
    res = CliRunner().invoke(app, args[1:] + ["--out", str(run)] + tiny)
    assert res.exit_code == 0, res.output
    d = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (d["in_channels"], d["num_classes"], d["normalize"]["kind"], d["size"]) == (1, 3, "zscore", [32, 32])
    assert (d["train_split"], d["val_split"], d["test_split"]) == ("train", "val", "test")
    # 12 images, seeded: round(0.1 * 12) = 1 for validation, round(0.2 * 12) = 2 for test, 9 for training
    assert d["derived"].endswith("splits train/val/test (seeded, seed 0) = 9/1/2 images")
    assert "num_classes 3 (mask values 0..2)" in d["derived"]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    # evaluation and prediction reuse the derived values: per-image protocol, strict rule, 3 classes
    res = CliRunner().invoke(app, ["evaluate", str(run)], env={"MEDSEG_PROGRESS": "1"})  # as on a terminal
    assert res.exit_code == 0, res.output
    assert "evaluate test" in res.output and "2/2" in res.output  # its progress bar
    s = json.loads((run / "eval" / "test-image-strict" / "summary.json").read_text())
    assert (s["protocol"], s["mode"], s["cases"], len(s["classes"])) == ("image", "strict", 2, 2)
