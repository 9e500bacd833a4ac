"""Models: the registry, the :class:`SegOutput` contract and one file per architecture."""

from medseg.models._output import SegOutput
from medseg.models._registry import (
    build_model,
    count_parameters,
    get_entry,
    list_models,
    model_names,
    register_model,
)

__all__ = ["SegOutput", "build_model", "count_parameters", "get_entry", "list_models", "model_names", "register_model"]
