"""Every built-in recipe has a protocol card (docs/protocols/<recipe>.md) whose table matches the resolved recipe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from medseg.config import load_config, recipe_names

CARDS = Path(__file__).resolve().parents[1] / "docs" / "protocols"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| `(?P<value>[^`]*)` \| (?P<source>[^|]*\S[^|]*) \|")
#: Settings every card must state (issue #14 item 9: split, sizes, augmentation, normalisation,
#: loss, optimiser, schedule, epochs, batch, precision, evaluation protocol and empty-mask rule).
REQUIRED = ("data.train_split", "data.val_split", "data.test_split", "data.size", "data.augment.preset",
            "data.normalize.kind", "data.batch_size", "model.name", "loss.terms.0", "optim.name", "optim.lr",
            "optim.weight_decay", "schedule.name", "trainer.max_epochs", "trainer.precision", "seed",
            "eval.protocol", "eval.mode", "eval.aggregate")


def _rows(name: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in (CARDS / f"{name}.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            assert m["key"] not in rows, f"{name}: key {m['key']} twice"
            rows[m["key"]] = m["value"].replace("\\|", "|")
    return rows


def _lookup(d: Any, key: str) -> Any:
    for k in key.split("."):
        d = d[int(k)] if isinstance(d, list) else d[k]
    return d


def test_every_recipe_has_a_card_and_every_card_a_recipe() -> None:
    assert sorted(p.stem for p in CARDS.glob("*.md")) == recipe_names()


@pytest.mark.parametrize("name", recipe_names())
def test_card_matches_the_resolved_recipe(name: str) -> None:
    rows = _rows(name)
    missing = [k for k in REQUIRED if k not in rows]
    assert not missing, f"docs/protocols/{name}.md lacks {missing}"
    resolved = load_config(name).to_dict()
    for key, text in rows.items():
        try:
            value = _lookup(resolved, key)
        except (KeyError, IndexError, ValueError):
            pytest.fail(f"docs/protocols/{name}.md: {key} is not a config key")
        assert yaml.safe_load(text) == value, f"docs/protocols/{name}.md: {key} says {text}, the recipe {value!r}"
    terms = len(resolved["loss"]["terms"])
    assert all(f"loss.terms.{i}" in rows for i in range(terms)), f"{name}: every loss term needs a row"


def test_cli_recipes_show_links_the_card() -> None:
    from typer.testing import CliRunner

    from medseg.cli import app

    res = CliRunner().invoke(app, ["recipes", "show", "snet_synapse"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "# protocol card: docs/protocols/snet_synapse.md"
    assert yaml.safe_load(res.output)["name"] == "snet_synapse"  # still valid YAML
