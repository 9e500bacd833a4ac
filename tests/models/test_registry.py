"""Every registered model: forward + backward at an odd valid size, state_dict round trip, params recorded."""

import pytest
import torch

from medseg.config import ConfigError
from medseg.models import SegOutput, build_model, count_parameters, get_entry, list_models, model_names

# Trainable parameters with in_channels=3, out_channels=1 (the `medseg models` listing), recorded.
# Paper figures: msnet/m2snet equal the official code without its unused fc (NOTES §2); snet is within
# 3 % of the paper's 38.7 M (Table 4); mgrad_unet is the addRA topology's ~24.1 M (NOTES §1).
EXPECTED_PARAMS = {
    "unet": 31_113_217,
    "attention_unet": 31_740_337,
    "unetpp": 36_451_524,  # U-Net's widths (64..1024, 64), issue #14 item 5
    "fcn": 32_946_753,  # torchvision fcn_resnet50(num_classes=1), no aux head
    "msnet": 27_692_329,
    "m2snet": 27_692_585,
    "mgrad_unet": 24_094_023,
    "snet": 38_885_315,
    "mda_unet": 60_120_302,
    "timm_unet": 23_827_569,  # timm ResNet-34 without fc (21.28 M) + MONAI's 256-128-64-32-16 decoder and head
}


def test_registry_lists_every_model():
    names = model_names()
    assert set(EXPECTED_PARAMS) == set(names)
    rows = {r["name"]: r for r in list_models(with_params=False)}
    assert set(rows) == set(names)
    assert all(len(r["default_size"]) == 2 for r in rows.values())


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="valid names: .*unet"):
        build_model("nope")


def test_bad_model_kwarg_is_a_config_error():
    with pytest.raises(ConfigError, match="model 'unet': bad model.kwargs: .*featurs"):
        build_model("unet", 1, 2, featurs=[4, 4, 8, 8, 8, 4])


@pytest.mark.parametrize("name", model_names())
def test_model_contract(name):
    torch.manual_seed(0)
    entry = get_entry(name)
    stride = entry.stride
    h, w = 3 * stride, 5 * stride  # odd multiples catch misaligned skips
    model = build_model(name, in_channels=3, out_channels=2)
    with torch.device("meta"):
        assert count_parameters(build_model(name, in_channels=3, out_channels=1)) == EXPECTED_PARAMS[name]
    x = torch.randn(1, 3, h, w)
    model.train()
    out = model(x)
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (1, 2, h, w)
    loss = out.logits.float().mean() + sum(a.float().mean() for a in out.aux.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # state_dict round trip into a fresh instance gives identical eval outputs
    model.eval()
    clone = build_model(name, in_channels=3, out_channels=2)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, clone(x).logits, atol=1e-5)
    # a size that is not a multiple of the stride gets a clear error with the nearest valid size
    with pytest.raises(ValueError, match="nearest valid size"):
        model(torch.randn(1, 3, h + 1, w))
