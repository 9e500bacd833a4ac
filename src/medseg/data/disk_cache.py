"""The transform of the disk cache (``data.cache: disk``): MONAI's ``PersistentDataset`` stores the output of
every leading deterministic ``Transform`` of its pipeline, so the sample preparation is one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monai.transforms import Transform

if TYPE_CHECKING:
    from medseg.data.base import Sample, SliceDataset


class PreparedSample(Transform):
    """A ``{"case", "slice"}`` item -> its decoded, pre-transformed sample (deterministic: cached on disk)."""

    def __init__(self, ds: SliceDataset) -> None:
        self.ds = ds

    def __call__(self, item: dict[str, Any]) -> Sample:
        return self.ds._load_pre(item["case"], item["slice"], disk=False)
