import pytest
import torch
from torch import nn

from medseg.config import ConfigError, OptimConfig, ParamGroup
from medseg.engine.optim import build_optimizer, param_groups
from medseg.engine.schedules import lr_multiplier


def test_poly_per_iteration():
    f = lr_multiplier("poly", steps_per_epoch=10, max_epochs=2, power=0.9)
    assert f(0) == 1.0
    assert f(10) == pytest.approx(0.5**0.9)
    assert f(20) == 0.0


def test_msnet_triangle_per_epoch():
    # E = 4: lr_e = 1 - |2(e+1)/5 - 1| -> 0.4, 0.8, 0.8, 0.4 (constant within an epoch)
    f = lr_multiplier("triangle", steps_per_epoch=3, max_epochs=4)
    assert [round(f(s), 6) for s in range(12)] == [0.4] * 3 + [0.8] * 3 + [0.8] * 3 + [0.4] * 3


def test_warmup_cosine_and_constant():
    f = lr_multiplier("warmup_cosine", steps_per_epoch=10, max_epochs=3, warmup_epochs=1)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(30) == pytest.approx(0.0, abs=1e-9)
    assert lr_multiplier("constant", steps_per_epoch=1, max_epochs=1)(123) == 1.0
    with pytest.raises(ValueError):
        lr_multiplier("nope", steps_per_epoch=1, max_epochs=1)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def test_param_groups_lr_multiplier():
    cfg = OptimConfig(name="sgd", lr=0.05, nesterov=True, param_groups=[ParamGroup(prefixes=["backbone."], lr_mult=0.1)])
    opt = build_optimizer(Toy(), cfg)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.005, 0.05])
    assert opt.defaults["nesterov"] is True


def test_empty_param_group_is_an_error():
    # the official MSNet code's group ('bkbone') silently matched nothing
    cfg = OptimConfig(param_groups=[ParamGroup(prefixes=["bkbone."], lr_mult=0.1)])
    with pytest.raises(ConfigError, match="match no trainable parameter"):
        param_groups(Toy(), cfg)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers(name, cls):
    assert isinstance(build_optimizer(Toy(), OptimConfig(name=name)), cls)
