import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg.layers.multiscale import RFB


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1)])
def test_rfb_keeps_spatial_size(size):
    rfb = RFB(5, 3).eval()
    y = rfb(torch.randn(2, 5, *size))
    assert y.shape == (2, 3, *size)
    assert (y >= 0).all()  # final ReLU


def test_rfb_parameter_count_by_hand():
    cin, c = 4, 2
    bn = 2 * c  # weight + bias of every BatchNorm
    conv = lambda i, kh, kw: i * c * kh * kw  # noqa: E731  (bias-free)
    branch0 = conv(cin, 1, 1) + bn
    branch = lambda k: conv(cin, 1, 1) + conv(c, 1, k) + conv(c, k, 1) + conv(c, 3, 3) + 4 * bn  # noqa: E731
    conv_cat = conv(4 * c, 3, 3) + bn
    conv_res = conv(cin, 1, 1) + bn
    expected = branch0 + branch(3) + branch(5) + branch(7) + conv_cat + conv_res
    assert expected == 5 * cin * c + 93 * c * c + 30 * c == 472
    assert _count(RFB(cin, c)) == expected
    assert _count(RFB(cin, c, act="relu")) == expected  # the activation adds nothing
    assert _count(RFB(64, 64)) == 403_328  # MGRAD-UNet's level-1 RFB


def test_rfb_branch_shapes_and_dilations():
    rfb = RFB(4, 2)
    last = [rfb.branch1[-1][0], rfb.branch2[-1][0], rfb.branch3[-1][0]]
    assert [c.dilation for c in last] == [(3, 3), (5, 5), (7, 7)]
    assert [tuple(rfb.branch3[i][0].kernel_size) for i in range(4)] == [(1, 1), (1, 7), (7, 1), (3, 3)]
    assert all(m.bias is None for m in rfb.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.ReLU) for m in rfb.branch1.modules())  # PraNet: conv + BN only
    assert any(isinstance(m, nn.ReLU) for m in RFB(4, 2, act="relu").branch1.modules())  # addRA


def test_rfb_residual_path():
    """With the fusion conv zeroed, the output is ReLU(BN(conv_res(x))) (eval BN: x / sqrt(1 + eps))."""
    torch.manual_seed(0)
    rfb = RFB(3, 4).eval()
    with torch.no_grad():
        rfb.conv_cat[0].weight.zero_()
    x = torch.randn(2, 3, 6, 5)
    w = rfb.conv_res[0].weight
    expected = F.relu(F.conv2d(x, w) / (1 + rfb.conv_res[1].eps) ** 0.5)
    torch.testing.assert_close(rfb(x), expected)
    # and the residual is really added: zeroing it changes the output
    with torch.no_grad():
        rfb.conv_cat[0].weight.normal_()
        y_full = rfb(x)
        rfb.conv_res[0].weight.zero_()
        y_nores = rfb(x)
    assert not torch.allclose(y_full, y_nores)


def test_rfb_backward():
    rfb = RFB(3, 4, act="relu")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    rfb(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in rfb.parameters())
