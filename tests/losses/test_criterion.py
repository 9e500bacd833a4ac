"""Criterion built from config: the weighted sum of its terms, computed directly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medseg.config import Config
from medseg.losses.criterion import Criterion
from medseg.losses.structure import StructureLoss
from medseg.models import SegOutput


def test_structure_plus_tenth_lossnet_equals_direct_sum() -> None:
    cfg = Config.model_validate({"loss": {"terms": [
        {"loss": "structure", "output": "logits", "weight": 1.0},
        # random VGG (allow_random) resized to 32 px instead of 224 to stay fast on a CPU
        {"loss": "lossnet", "output": "logits", "weight": 0.1, "kwargs": {"allow_random": True, "resize": 32}},
    ]}})
    torch.manual_seed(0)
    crit = Criterion.from_config(cfg.loss)
    logits = torch.randn(2, 1, 24, 24)
    target = torch.zeros(2, 24, 24, dtype=torch.int64)
    target[0, 4:14, 6:18] = 1
    target[1, 10:20, 2:9] = 1
    total, parts = crit(SegOutput(logits=logits), target)

    structure = StructureLoss()(logits, target)
    vgg = crit.losses[1]  # its random VGG blocks; the LossNet formula below is written out by hand
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate((x.repeat(1, 3, 1, 1) - mean) / std, size=(32, 32), mode="bilinear", align_corners=False)
        out = []
        for block in vgg.blocks:
            x = block(x)
            out.append(x)
        return out

    with torch.no_grad():
        fp, fg = feats(torch.sigmoid(logits)), feats(target[:, None].float())
        lossnet = sum(F.mse_loss(a, b) for a, b in zip(fp, fg))
    expected = structure + 0.1 * lossnet
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["structure/logits"], structure, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(parts["lossnet/logits"], 0.1 * lossnet, rtol=1e-5, atol=1e-7)
    assert lossnet > 0 and structure > 0
