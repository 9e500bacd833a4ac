"""The built-in models as a table committed in the package (``models/catalog.json``), read without torch.

``medseg models`` lists this table instead of importing every architecture and building each model to
count its parameters (10-19 s -> well under 1 s). ``tests/models/test_catalog.py`` checks the table
against the live registry and real parameter counts; after adding or changing a model, regenerate it::

    python -m medseg.models._catalog

This module reads the table only (the layer below the models: :mod:`medseg.config` and the registry use it);
building it lives with the models in :mod:`medseg.models._catalog`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

#: the in/out channels of the ``params`` column (the paper settings differ; see docs/models/)
PARAMS_CHANNELS = (3, 1)


def _catalog_file() -> Any:
    return resources.files("medseg") / "models" / "catalog.json"


def read_catalog() -> list[dict[str, Any]]:
    """Rows ``name, paper, default_size, stride, description, params`` (3 -> 1 channels), sorted by name."""
    return json.loads(_catalog_file().read_text(encoding="utf-8"))


def match_names(names: Sequence[str], pattern: str | Sequence[str] = "") -> list[str]:
    """``names`` matching a shell-style ``pattern`` (or any of several) as timm's ``list_models("*unet*")``;
    an empty pattern matches all. Case-insensitive; a pattern without wildcards is an exact name."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    patterns = [p.lower() for p in patterns if p]
    if not patterns:
        return list(names)
    return [n for n in names if any(fnmatch.fnmatchcase(n.lower(), p) for p in patterns)]
