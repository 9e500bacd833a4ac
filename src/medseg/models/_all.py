"""Imports every architecture module so that its models register themselves."""

import importlib
import logging

_log = logging.getLogger(__name__)

ARCHITECTURE_MODULES = [
    "unet",
    "attention_unet",
    "unetpp",
    "msnet",
    "mgrad_unet",
    "snet",
    "mda_unet",
]

for _name in ARCHITECTURE_MODULES:
    try:
        importlib.import_module(f"medseg.models.{_name}")
    except ModuleNotFoundError as err:  # an architecture still being written
        if err.name != f"medseg.models.{_name}":
            raise
        _log.debug("architecture module %s not present", _name)
