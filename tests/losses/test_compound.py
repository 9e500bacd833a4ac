import pytest
import torch
import torch.nn.functional as F

from medseg.config import ConfigError, LossTerm
from medseg.losses import Criterion, build_loss, loss_names, resize_target
from medseg.models import SegOutput


def transunet_dice(logits, target, k):
    """TransUNet's DiceLoss written out: softmax, per class incl. background, squared denominators, batch-wise."""
    p = logits.softmax(1)
    oh = F.one_hot(target, k).permute(0, 3, 1, 2).float()
    per = [1 - (2 * (p[:, c] * oh[:, c]).sum() + 1e-5) / ((p[:, c] ** 2).sum() + (oh[:, c] ** 2).sum() + 1e-5) for c in range(k)]
    return sum(per) / k


def test_dice_matches_transunet_formula():
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    assert torch.allclose(build_loss("dice")(x, t), transunet_dice(x, t, 4), atol=1e-6)


def test_dice_hand_computed_binary():
    # one pixel of two predicted with p = sigmoid(0) = 0.5 everywhere; target [1, 0]
    x = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[1, 0]]])
    # squared: 1 - (2*0.5 + 1e-5) / (0.25 + 0.25 + 1 + 1e-5)
    expected = 1 - (1.0 + 1e-5) / (1.5 + 1e-5)
    assert build_loss("dice")(x, t).item() == pytest.approx(expected, abs=1e-6)


def test_ce_binary_and_multiclass():
    x = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[1, 0]]])
    assert build_loss("bce")(x, t).item() == pytest.approx(0.693147, abs=1e-5)  # log 2
    x3 = torch.zeros(1, 3, 2, 2)
    assert build_loss("ce")(x3, torch.zeros(1, 2, 2, dtype=torch.long)).item() == pytest.approx(1.098612, abs=1e-5)  # log 3


def test_dice_ce_weights():
    torch.manual_seed(1)
    x, t = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    got = build_loss("dice_ce", ce_weight=0.3, dice_weight=0.7)(x, t)
    want = 0.3 * F.cross_entropy(x, t) + 0.7 * transunet_dice(x, t, 3)
    assert torch.allclose(got, want, atol=1e-6)


def test_unknown_loss_lists_names():
    with pytest.raises(ConfigError, match="dice_ce"):
        build_loss("nope")
    assert {"dice", "ce", "bce", "dice_ce"} <= set(loss_names())


def test_criterion_config_errors_name_the_term():
    with pytest.raises(ConfigError, match=r"loss.terms\[1\]: unknown loss 'nope'; valid names: .*dice_ce"):
        Criterion([LossTerm(loss="ce"), LossTerm(loss="nope")])
    with pytest.raises(ConfigError, match=r"loss.terms\[0\]: loss 'dice_ce': bad kwargs: .*cee_weight"):
        Criterion([LossTerm(loss="dice_ce", kwargs={"cee_weight": 1.0})])


def test_resize_target_nearest():
    t = torch.tensor([[[0, 1], [2, 3]]])
    r = resize_target(t, (4, 4))
    assert r.shape == (1, 4, 4) and r.dtype == torch.long
    assert r[0, :2, :2].eq(0).all() and r[0, 2:, 2:].eq(3).all()


def test_criterion_weighted_terms_on_named_outputs():
    torch.manual_seed(2)
    out = SegOutput(torch.randn(2, 3, 8, 8), {"deep": torch.randn(2, 3, 4, 4)})
    t = torch.randint(0, 3, (2, 8, 8))
    crit = Criterion([LossTerm(loss="ce", output="logits", weight=1.0), LossTerm(loss="ce", output="aux/deep", weight=0.5)])
    total, parts = crit(out, t)
    want = F.cross_entropy(out.logits, t) + 0.5 * F.cross_entropy(out.aux["deep"], resize_target(t, (4, 4)))
    assert torch.allclose(total, want, atol=1e-6)
    assert set(parts) == {"ce/logits", "ce/aux/deep"}


def test_criterion_unknown_output_is_clear():
    out = SegOutput(torch.randn(1, 1, 4, 4))
    crit = Criterion([LossTerm(loss="bce", output="aux/missing")])
    with pytest.raises(KeyError, match="available: logits"):
        crit(out, torch.zeros(1, 4, 4, dtype=torch.long))
