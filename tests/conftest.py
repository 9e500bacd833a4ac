"""Shared test fixtures. Tests never download: the hub is offline for the whole session, and every
weight downloader of torch, torchvision, timm and huggingface_hub raises (``no_weight_downloads``)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCH_HOME", str(Path(__file__).parent / ".no-torch-home"))

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (a user's fresh clone has none)")
    return SHARED_DATA


#: (module, function) pairs that fetch weights; modules that hold their own reference are patched too.
WEIGHT_DOWNLOADERS = (
    ("torch.hub", "load_state_dict_from_url"),
    ("torch.hub", "download_url_to_file"),
    ("torchvision._internally_replaced_utils", "load_state_dict_from_url"),
    ("torchvision.models._api", "load_state_dict_from_url"),
    ("timm.models._builder", "load_state_dict_from_url"),
    ("timm.models._hub", "download_url_to_file"),
    ("timm.models._hub", "hf_hub_download"),
    ("huggingface_hub", "hf_hub_download"),
    ("huggingface_hub.file_download", "hf_hub_download"),
)


def _refuse_download(*args: object, **kwargs: object) -> None:
    what = args[0] if args else kwargs.get("url", kwargs.get("repo_id", "?"))
    raise RuntimeError(
        f"tests must not download weights (asked for {what!r}); use a local file or pretrained=None"
    )


@pytest.fixture(scope="session", autouse=True)
def no_weight_downloads() -> Iterator[None]:
    """For the whole session, every function of :data:`WEIGHT_DOWNLOADERS` raises ``RuntimeError``."""
    with pytest.MonkeyPatch.context() as mp:
        for module, name in WEIGHT_DOWNLOADERS:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                continue
            if hasattr(mod, name):
                mp.setattr(mod, name, _refuse_download)
        yield
