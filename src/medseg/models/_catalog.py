"""Builds the committed model table ``models/catalog.json`` (read by :mod:`medseg.catalog`) from the live registry.

Regenerate it after adding or changing a model: ``python -m medseg.models._catalog``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.catalog import PARAMS_CHANNELS


def build_catalog() -> list[dict[str, Any]]:
    """The table from the live registry, counting parameters (on the meta device: exact, no memory)."""
    import torch

    from medseg.models._registry import build_model, count_parameters, list_models

    rows = list_models(with_params=False)
    for row in rows:
        with torch.device("meta"):
            row["params"] = count_parameters(build_model(row["name"], *PARAMS_CHANNELS))
        row["default_size"] = list(row["default_size"])
    return rows


def write_catalog(path: str | Path | None = None) -> Path:
    """Write :func:`build_catalog` to ``path`` (default: the package's ``models/catalog.json``)."""
    path = Path(path) if path is not None else Path(__file__).parent / "catalog.json"
    rows = ",\n ".join(json.dumps(r, ensure_ascii=False) for r in build_catalog())  # one model a line: readable diffs
    path.write_text(f"[{rows}]\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_catalog())
