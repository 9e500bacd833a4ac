"""The output contract every medseg model returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class SegOutput:
    """Raw ``logits`` at input size and named auxiliary logits at any resolution.

    ``aux`` holds deep-supervision heads, side outputs or a second decoder's prediction; the
    criterion resizes targets to each of them. Models return the same structure in train and eval.
    """

    logits: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)
    # Non-logit state a training strategy may need (e.g. MGRAD-UNet's ``"feedback"`` list of
    # decoder differences for the next pass). Never used by losses or metrics.
    extras: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Tensor:
        """Return ``logits`` or ``aux/<name>`` by the name used in loss configs."""
        if name == "logits":
            return self.logits
        key = name[4:] if name.startswith("aux/") else name
        if key not in self.aux:
            valid = ["logits"] + [f"aux/{k}" for k in self.aux]
            raise KeyError(f"model output has no {name!r}; available: {', '.join(valid)}")
        return self.aux[key]

    def names(self) -> list[str]:
        return ["logits"] + [f"aux/{k}" for k in self.aux]
