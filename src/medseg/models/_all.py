"""Imports every architecture module so that its models register themselves."""

from medseg.models import (  # noqa: F401
    attention_unet,
    fcn,
    flexible_unet,
    mda_unet,
    mgrad_unet,
    msnet,
    snet,
    unet,
    unetpp,
)
