"""The committed model table (``models/catalog.json``) against the live registry and real parameter counts."""

from __future__ import annotations

import pytest

from medseg.catalog import match_names, read_catalog
from medseg.models import build_model, count_parameters, list_models
from medseg.models._catalog import build_catalog


def test_catalog_matches_the_registry_and_real_parameter_counts():
    """On failure: regenerate the table with ``python -m medseg.models._catalog`` and commit it."""
    assert read_catalog() == build_catalog()


def test_meta_device_counts_equal_real_counts():
    import torch

    real = count_parameters(build_model("unetpp", in_channels=3, out_channels=1))
    with torch.device("meta"):
        meta = count_parameters(build_model("unetpp", in_channels=3, out_channels=1))
    assert real == meta == {r["name"]: r["params"] for r in read_catalog()}["unetpp"]


def test_list_models_filters_names_like_timm():
    names = [r["name"] for r in list_models("*unet*")]
    assert names == ["attention_unet", "mda_unet", "mgrad_unet", "timm_unet", "unet", "unetpp"]
    assert [r["name"] for r in list_models("unet")] == ["unet"]  # no wildcard: the exact name
    assert [r["name"] for r in list_models(["m*snet", "SNET"])] == ["m2snet", "msnet", "snet"]
    assert list_models("nope*") == []
    assert match_names(["a", "b"], "") == ["a", "b"]


@pytest.mark.parametrize("channels", [(3, 1), (1, 4)])
def test_list_models_params_equal_a_real_build(channels):
    row = list_models("unetpp", in_channels=channels[0], out_channels=channels[1])[0]
    assert row["params"] == count_parameters(build_model("unetpp", *channels))
