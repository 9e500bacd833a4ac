import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg.losses import Criterion, build_loss
from medseg.losses.aggregated import AggregatedLoss, WeightedLoss, nonempty_subsets
from medseg.models import SegOutput


def transunet_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TransUNet's DiceLoss written out: softmax, per class incl. background, whole batch, mean."""
    p = logits.softmax(1)
    g = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    d = 1 - (2 * (p * g).sum(dims) + 1e-5) / ((p * p).sum(dims) + (g * g).sum(dims) + 1e-5)
    return d.mean()


def base(logits: torch.Tensor, target: torch.Tensor, ce: float = 0.3, dice: float = 0.7) -> torch.Tensor:
    return ce * F.cross_entropy(logits, target) + dice * transunet_dice(logits, target)


@pytest.fixture
def sides():
    torch.manual_seed(0)
    preds = [torch.randn(2, 4, 6, 5) for _ in range(3)]
    target = torch.randint(0, 4, (2, 6, 5))
    return preds, target


def test_aggregated_equals_hand_enumeration(sides):
    (a, b, c), t = sides
    expected = (
        base(a, t)
        + base(b, t)
        + base(c, t)
        + base(a + b, t)
        + base(a + c, t)
        + base(b + c, t)
        + base(a + b + c, t)
    )
    got = build_loss("aggregated")([a, b, c], t)
    torch.testing.assert_close(got, expected)
    # paper_weights: Eq. 9 as printed (0.3 Dice, 0.7 CE); explicit weights override
    expected_paper = sum(base(x, t, ce=0.7, dice=0.3) for x in (a, b, c, a + b, a + c, b + c, a + b + c))
    torch.testing.assert_close(AggregatedLoss(paper_weights=True)([a, b, c], t), expected_paper)
    torch.testing.assert_close(
        AggregatedLoss(paper_weights=True, ce_weight=0.3, dice_weight=0.7)([a, b, c], t), expected
    )


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.seen.append(logits)
        return logits.sum() * 0 + 1


def test_aggregated_has_31_terms_for_five_outputs():
    assert len(list(nonempty_subsets(5))) == 31 and len(set(nonempty_subsets(5))) == 31
    loss = AggregatedLoss()
    loss.base = _Recorder()
    # side i = 2^i: every subset sum is a distinct integer 1..31
    preds = [torch.full((1, 2, 2, 2), float(2**i)) for i in range(5)]
    total = loss(preds, torch.zeros(1, 2, 2, dtype=torch.long))
    assert total.item() == 31
    assert sorted(int(x[0, 0, 0, 0]) for x in loss.base.seen) == list(range(1, 32))


def test_weighted_equals_weighted_sum(sides):
    (a, b, c), t = sides
    torch.testing.assert_close(build_loss("weighted")([a, b, c], t), base(a, t) + base(b, t) + base(c, t))
    w = [0.5, 2.0, 0.0]
    got = WeightedLoss(weights=w, ce_weight=0.6, dice_weight=0.4)([a, b, c], t)
    torch.testing.assert_close(
        got, sum(wi * base(x, t, 0.6, 0.4) for wi, x in zip(w, (a, b, c), strict=True))
    )
    with pytest.raises(ValueError, match="2 weights for 3 outputs"):
        WeightedLoss(weights=[1, 1])([a, b, c], t)


def test_multi_output_checks(sides):
    (a, b, _), t = sides
    with pytest.raises(ValueError, match="same shape"):
        AggregatedLoss()([a, b[:, :, :4]], t)
    with pytest.raises(ValueError, match="list of logits"):
        AggregatedLoss()(a, t)
    with pytest.raises(ValueError, match="at most"):
        AggregatedLoss()([a] * 11, t)
    assert AggregatedLoss.multi_output and WeightedLoss.multi_output


def test_criterion_term_over_side_outputs(sides):
    (a, b, c), t = sides

    class Term:
        def __init__(self, loss, outputs, kwargs):
            self.loss, self.output, self.outputs, self.weight, self.kwargs = loss, None, outputs, 1.0, kwargs

    out = SegOutput(logits=a, aux={"side1": a, "side2": b, "side3": c})
    crit = Criterion([Term("aggregated", ["aux/side1", "aux/side2", "aux/side3"], {})])
    total, parts = crit(out, t)
    torch.testing.assert_close(total, AggregatedLoss()([a, b, c], t))
    assert list(parts) == ["aggregated/3outputs"]


def test_aggregated_backward(sides):
    preds, t = sides
    preds = [p.clone().requires_grad_() for p in preds]
    AggregatedLoss()(preds, t).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in preds)
