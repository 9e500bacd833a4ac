"""Models: the registry, the :class:`SegOutput` contract and one file per architecture."""

from medseg.models._output import SegOutput
from medseg.models._registry import (
    add_member_loader,
    build_model,
    count_parameters,
    get_entry,
    legacy_kwargs,
    list_models,
    model_names,
    register_model,
    resolved_kwargs,
)

__all__ = ["SegOutput", "build_model", "count_parameters", "get_entry", "legacy_kwargs", "list_models", "model_names",
           "register_model", "resolved_kwargs"]


def _import_architectures() -> None:
    """Import every architecture module (on the registry's first lookup: ``import medseg.models`` stays cheap);
    their ``@register_model`` decorators fill the registry."""
    from medseg.models import (  # noqa: F401
        attention_unet,
        fcn,
        mda_unet,
        mgrad_unet,
        msnet,
        snet,
        timm_unet,
        unet,
        unetpp,
    )


add_member_loader(_import_architectures)
