import math

import pytest
import torch
from torch import nn

from medseg.config import ConfigError, OptimConfig, ParamGroup, load_config
from medseg.engine.optim import build_optimizer, param_groups
from medseg.engine.schedules import build_scheduler, drop_horizon


# The previous implementation's multipliers (LambdaLR over these), written out from their formulas.
def old_poly(step, total, power):
    return max(0.0, 1.0 - min(step, total) / total) ** power


def old_triangle(step, per_epoch, epochs):
    e = min(step // per_epoch, epochs - 1)
    return 1.0 - abs(2.0 * (e + 1) / (epochs + 1) - 1.0)


def old_warmup_cosine(step, per_epoch, total, warmup_epochs, min_ratio=0.0):
    warm = int(round(warmup_epochs * per_epoch))
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _two_groups(lr=0.05):
    """An optimizer with a backbone group at 0.1x, as the MSNet/M2SNet recipes have."""
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [p1], "lr": lr * 0.1}, {"params": [p2], "lr": lr}], lr=lr)


def _lrs(sched, steps):
    """The lr of every group used at steps 0..steps-1 (the scheduler is stepped after each optimizer step)."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    return out


def test_hand_checked_points():
    # poly 0.9 over 20 steps: step 10 -> 0.5 ** 0.9 = 0.535887; the last step is 0.05 ** 0.9 = 0.067464
    lrs = _lrs(build_scheduler("poly", _two_groups(1.0), steps_per_epoch=10, total_steps=20, power=0.9), 20)
    assert lrs[0][1] == 1.0 and lrs[10][1] == pytest.approx(0.535887, abs=1e-6)
    assert lrs[19][1] == pytest.approx(0.067464, abs=1e-6) and lrs[19][0] == pytest.approx(0.0067464, abs=1e-7)
    # warm-up over 10 steps: 0.1, 0.2, ... 1.0; then cosine over 20 steps: step 20 -> 0.5, step 29 -> 0.006156
    lrs = _lrs(build_scheduler("warmup_cosine", _two_groups(1.0), steps_per_epoch=10, total_steps=30,
                               warmup_epochs=1), 30)
    assert [round(r[1], 6) for r in lrs[:11]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0]
    assert lrs[20][1] == pytest.approx(0.5) and lrs[29][1] == pytest.approx(0.0061558, abs=1e-7)
    # MSNet's triangle, E = 4: 0.4, 0.8, 0.8, 0.4, constant within an epoch
    lrs = _lrs(build_scheduler("triangle", _two_groups(1.0), steps_per_epoch=3, total_steps=12), 12)
    assert [round(r[1], 6) for r in lrs] == [0.4] * 3 + [0.8] * 3 + [0.8] * 3 + [0.4] * 3
    assert [r[1] for r in _lrs(build_scheduler("constant", _two_groups(1.0), steps_per_epoch=1, total_steps=5), 9)] \
        == [1.0] * 9
    with pytest.raises(ValueError):
        build_scheduler("nope", _two_groups(), steps_per_epoch=1, total_steps=1)


@pytest.mark.parametrize("recipe", ["snet_synapse", "m2snet_polyp", "quickstart", "unet_kvasir", "mda_unet_kits",
                                    "mgrad_unet_synapse"])
@pytest.mark.parametrize("per_epoch,epochs", [(7, 5), (1, 3), (13, 2)])
def test_each_recipe_schedule_equals_the_previous_formula(recipe, per_epoch, epochs):
    s = load_config(recipe).schedule
    total = per_epoch * epochs
    old = {
        "poly": lambda k: old_poly(k, total, s.power),
        "triangle": lambda k: old_triangle(k, per_epoch, epochs),
        "warmup_cosine": lambda k: old_warmup_cosine(k, per_epoch, total, s.warmup_epochs, s.min_lr_ratio),
        "constant": lambda k: 1.0,
    }[s.name]
    sched = build_scheduler(s.name, _two_groups(), steps_per_epoch=per_epoch, total_steps=total, power=s.power,
                            warmup_epochs=s.warmup_epochs, min_lr_ratio=s.min_lr_ratio, base_lr=0.05)
    for k, (backbone, rest) in enumerate(_lrs(sched, total)):
        assert rest == pytest.approx(0.05 * old(k), rel=1e-9, abs=1e-15), (s.name, k)
        assert backbone == pytest.approx(0.005 * old(k), rel=1e-9, abs=1e-15), (s.name, k)


@pytest.mark.parametrize("name", ["poly", "warmup_cosine", "triangle"])
def test_resume_restores_progress_and_a_longer_run_keeps_its_new_horizon(name):
    kw = dict(steps_per_epoch=5, warmup_epochs=1, power=0.9)
    whole = _lrs(build_scheduler(name, _two_groups(), total_steps=20, **kw), 20)
    first = build_scheduler(name, _two_groups(), total_steps=20, **kw)
    head = _lrs(first, 8)
    state = first.state_dict()
    second = build_scheduler(name, _two_groups(), total_steps=20, **kw)
    second.optimizer.load_state_dict(first.optimizer.state_dict())
    second.load_state_dict(drop_horizon(state))
    assert head + _lrs(second, 12) == whole  # exact resume: same numbers
    longer = build_scheduler(name, _two_groups(), total_steps=40, **kw)
    longer.optimizer.load_state_dict(first.optimizer.state_dict())
    longer.load_state_dict(drop_horizon(state))
    tail = _lrs(longer, 33)
    assert tail[0] == whole[8]  # continues from where it stopped
    if name == "triangle":
        assert tail[-1][1] == pytest.approx(0.05 * old_triangle(40, 5, 8))
    else:  # still decaying past the checkpoint's end (step 20), reaching 0 at the new end (step 40)
        rest = [r[1] for r in tail[2:]]  # steps 10..40
        assert all(a > b for a, b in zip(rest, rest[1:])) and rest[-2] > 0 and rest[-1] < 1e-12


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


def test_cosine_floor_above_a_param_group_is_a_config_error():
    with pytest.raises(ConfigError, match="min_lr_ratio=0.5 .* lr_mult=0.1"):
        load_config("unet_kvasir", ["schedule.min_lr_ratio=0.5",
                                    "optim.param_groups=[{prefixes: [encoder.], lr_mult: 0.1}]"])
    assert load_config("unet_kvasir", ["schedule.min_lr_ratio=0.05"]).schedule.min_lr_ratio == 0.05
