"""MSNet / M2SNet: parameter parity with the official code, shapes, ablations, official weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medseg.layers.fusion import FixedFilter, SubtractionPyramid
from medseg.models import build_model, count_parameters, get_entry
from medseg.models._backbones import TimmEncoder
from medseg.models._weights import WeightLoadError, load_matching
from medseg.models.msnet import MSNet, load_official_checkpoint, official_state_dict

MSNET_PARAMS = 27_692_329  # NOTES.md section 2: official MSNet without the backbone's unused fc
M2SNET_PARAMS = 27_692_585  # + two shared BatchNorm2d(64) of the fixed filters
BACKBONE_PARAMS = 23_669_352  # res2net50d features_only == official res2net50_v1b_26w_4s without fc
UNIT_PARAMS = 64 * 64 * 9 + 64 + 2 * 64  # conv3x3(bias) + BN(64) = 37,056
# Table 12's units: bias-free dilated 3x3 conv (64 -> 64) + BN per branch; DenseASPP's branch i sees 64 (i + 1).
ASPP_PARAMS = 3 * (64 * 64 * 9 + 128)  # rates 6, 12, 18
DENSEASPP_PARAMS = 64 * 64 * 9 * (1 + 2 + 3 + 4 + 5) + 5 * 128  # rates 3, 6, 12, 18, 24


@pytest.fixture(scope="module")
def models() -> dict[str, MSNet]:
    torch.manual_seed(0)
    return {"msnet": build_model("msnet"), "m2snet": build_model("m2snet")}


def _randomize_bn_stats(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial running statistics and affine params so that eval outputs depend on every tensor."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=g)))


# -- parity and contract --------------------------------------------------------------------------


def test_parameter_parity_with_official_code(models: dict[str, MSNet]) -> None:
    for name, total in (("msnet", MSNET_PARAMS), ("m2snet", M2SNET_PARAMS)):
        m = models[name]
        assert count_parameters(m) == total
        assert count_parameters(m.backbone) == BACKBONE_PARAMS
        assert count_parameters(m) - count_parameters(m.backbone) == total - BACKBONE_PARAMS
    assert M2SNET_PARAMS - MSNET_PARAMS == 256
    e = get_entry("m2snet")
    assert e.default_size == (352, 352) and e.stride == 32 and "M2SNet" in e.paper
    assert get_entry("msnet").default_size == (352, 352)


def test_encoder_features_match_official_strides(models: dict[str, MSNet]) -> None:
    enc = models["msnet"].backbone
    assert enc.feature_channels == [64, 256, 512, 1024, 2048]
    assert enc.reductions == [4, 4, 8, 16, 32]  # x1 is the stem *after* the max-pool
    assert enc.taps == ["maxpool", "layer1", "layer2", "layer3", "layer4"]
    enc.eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 16, 24),
        (256, 16, 24),
        (512, 8, 12),
        (1024, 4, 6),
        (2048, 2, 3),
    ]


def test_forward_backward_at_paper_size(models: dict[str, MSNet]) -> None:
    for m in models.values():
        m.train()
        m.zero_grad()
        out = m(torch.randn(1, 3, 352, 352))
        assert out.logits.shape == (1, 1, 352, 352) and out.aux == {}
        out.logits.mean().backward()
        assert m.head.weight.grad is not None and m.backbone.model.conv1[0].weight.grad is not None
        m.zero_grad(set_to_none=True)


def test_forward_backward_at_odd_valid_size(models: dict[str, MSNet]) -> None:
    for m in models.values():
        m.train()
        out = m(torch.randn(1, 3, 96, 160))
        assert out.logits.shape == (1, 1, 96, 160)
        assert torch.isfinite(out.logits).all()
        out.logits.mean().backward()
        assert m.reduce[0][0].weight.grad is not None
        m.zero_grad(set_to_none=True)


def test_size_not_divisible_by_32_is_a_clear_error(models: dict[str, MSNet]) -> None:
    with pytest.raises(
        ValueError, match=r"m2snet: input size 100x100 is not a multiple of 32; nearest valid size is 96x96"
    ):
        models["m2snet"](torch.randn(1, 3, 100, 100))


def test_pretrained_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="pretrained weight file not found: .*nope.pth"):
        MSNet(pretrained=str(missing))


# -- fixed filters ---------------------------------------------------------------------------------


def test_fixed_filters_are_buffers_not_parameters(models: dict[str, MSNet]) -> None:
    m = models["m2snet"]
    assert len(m.pyramid.filters) == 2
    assert not any("kernel" in n for n, _ in m.named_parameters())
    assert not any(k.endswith("kernel") for k in m.state_dict())
    buffers = dict(m.named_buffers())
    assert buffers["pyramid.filters.0.kernel"].shape == (1, 1, 3, 3)
    assert buffers["pyramid.filters.1.kernel"].shape == (1, 1, 5, 5)
    assert torch.equal(buffers["pyramid.filters.1.kernel"], torch.ones(1, 1, 5, 5))
    # the shared BNs are the only trainable tensors the msu adds
    assert sum(p.numel() for p in m.pyramid.filters.parameters()) == 256


@pytest.mark.parametrize("k", [3, 5])
def test_fast_channel_sum_equals_full_convolution(k: int) -> None:
    torch.manual_seed(k)
    f = FixedFilter(64, k).eval()
    f.norm.running_mean.normal_(0, 10)
    f.norm.running_var.uniform_(100, 1000)
    x = torch.rand(2, 64, 11, 13)
    fast = f(x)
    f.fast = False
    full = f(x)
    # the literal official operation: conv with a full (C, C, k, k) all-ones weight, zero bias
    ref = F.relu(f.norm(F.conv2d(x, torch.ones(64, 64, k, k), torch.zeros(64), padding=k // 2)))
    assert torch.allclose(fast, full, atol=1e-4, rtol=1e-5)
    assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-5)


# -- ablation switches -----------------------------------------------------------------------------


def test_ablation_parameter_deltas_of_the_pyramid() -> None:
    def n(**kw: object) -> int:
        return count_parameters(SubtractionPyramid(64, **kw))  # type: ignore[arg-type]

    su = n(unit="su")
    assert n(unit="msu") - su == 256  # two shared BN(64): kernels 3 and 5
    assert n(unit="add") == su  # addition units: no extra parameters (Table 9)
    assert n(unit="msu", kernel_sizes=(1, 3)) - su == 128
    assert n(unit="msu", kernel_sizes=(1, 3, 5, 7)) - su == 384
    assert n(unit="msu", filter_weights="gaussian") - su == 256
    assert n(unit="msu", depthwise=True) - su == 256
    # orders: 10 units + x5_dem_4 at 4 orders; 9 units at 3; 7 at 2; 4 at 1
    assert [SubtractionPyramid.num_units(o) for o in (1, 2, 3, 4)] == [4, 7, 9, 10]
    assert su - n(unit="su", orders=3) == 2 * UNIT_PARAMS
    assert su - n(unit="su", orders=2) == 4 * UNIT_PARAMS
    assert su - n(unit="su", orders=1) == 7 * UNIT_PARAMS
    with pytest.raises(ValueError, match="include 1"):
        SubtractionPyramid(64, unit="msu", kernel_sizes=(3, 5))


@pytest.mark.parametrize(
    ("kwargs", "delta"),
    [
        ({"unit": "add"}, 0),
        ({"unit": "su", "orders": 2}, -4 * UNIT_PARAMS),
        ({"unit": "msu", "kernel_sizes": (1, 3, 5, 7), "filter_weights": "gaussian", "depthwise": True}, 384),
        # Table 9 baseline: 10 units, x5_dem_4, 3 level convs and x5_dem_5 (2048 -> 64) gone
        ({"unit": "none"}, -14 * UNIT_PARAMS - (2048 * 64 * 9 + 64 + 128)),
        ({"unit": "aspp"}, ASPP_PARAMS),  # Table 12
        ({"unit": "denseaspp"}, DENSEASPP_PARAMS),  # Table 12
    ],
)
def test_ablation_models_build_and_run(kwargs: dict, delta: int) -> None:
    m = MSNet(**kwargs).eval()
    assert count_parameters(m) == MSNET_PARAMS + delta
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert out.logits.shape == (1, 1, 64, 64) and torch.isfinite(out.logits).all()



@pytest.mark.parametrize("unit", ["none", "aspp", "denseaspp"])
def test_table9_table12_units_forward_backward_at_odd_size(unit: str) -> None:
    m = build_model("m2snet", unit=unit).train()
    out = m(torch.randn(2, 3, 64, 96))
    assert out.logits.shape == (2, 1, 64, 96) and out.aux == {}
    out.logits.mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    if unit == "none":
        assert m.pyramid is None
    else:
        assert len(m.pyramid.aspp.branches) == (3 if unit == "aspp" else 5) and len(m.pyramid.filters) == 0


def test_aspp_units_by_hand() -> None:
    from medseg.layers.fusion import ASPPBranches

    p = SubtractionPyramid(4, unit="denseaspp").eval()
    a = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(p.difference(a, a), torch.zeros_like(a))  # equal operands: zero difference
    torch.testing.assert_close(p.difference(a, torch.zeros_like(a)) >= a.abs(), torch.ones_like(a, dtype=torch.bool))
    # dense cascade: branch i's conv sees cat(x, y_1 .. y_{i-1}); with all-ones 1-channel weights and an identity
    # BN, y_1 = relu(3x3 sum of x), y_2 = relu(3x3 sum of x + y_1) at the centre of a delta input
    b = ASPPBranches(1, (1, 1), dense=True).eval()
    for branch in b.branches:
        torch.nn.init.ones_(branch[0].weight)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    y1, y2 = b(x)
    eps = b.branches[0][1].eps
    assert y1[0, 0, 2, 2].item() == pytest.approx(1 / (1 + eps) ** 0.5)
    assert y2[0, 0, 2, 2].item() == pytest.approx((1 + 9 * y1[0, 0, 2, 2].item()) / (1 + eps) ** 0.5)


def test_in_channels_and_multiclass_head() -> None:
    m = build_model("msnet", in_channels=1, out_channels=3).eval()
    assert m.backbone.model.conv1[0].weight.shape == (32, 1, 3, 3)
    assert count_parameters(m) == MSNET_PARAMS - 32 * 2 * 9 + 2 * (64 * 9 + 1)
    with torch.no_grad():
        assert m(torch.randn(1, 1, 64, 96)).logits.shape == (1, 3, 64, 96)


# -- official key layout ----------------------------------------------------------------------------


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{s}": (c,) for s in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def official_res2net50_v1b_26w_4s_shapes() -> dict[str, tuple[int, ...]]:
    """Tensor names/shapes of the official ``model/res2net.py`` Res2Net-50-v1b-26w-4s, written out by hand."""
    s: dict[str, tuple[int, ...]] = {
        "conv1.0.weight": (32, 3, 3, 3),
        "conv1.3.weight": (32, 32, 3, 3),
        "conv1.6.weight": (64, 32, 3, 3),
    }
    s |= _bn("conv1.1", 32) | _bn("conv1.4", 32) | _bn("bn1", 64)
    inplanes = 64
    for li, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        width = planes * 26 // 64
        for b in range(blocks):
            p = f"layer{li}.{b}"
            s[f"{p}.conv1.weight"] = (width * 4, inplanes, 1, 1)
            s |= _bn(f"{p}.bn1", width * 4)
            for i in range(3):
                s[f"{p}.convs.{i}.weight"] = (width, width, 3, 3)
                s |= _bn(f"{p}.bns.{i}", width)
            s[f"{p}.conv3.weight"] = (planes * 4, width * 4, 1, 1)
            s |= _bn(f"{p}.bn3", planes * 4)
            if b == 0:  # stage block: AvgPool (no tensors) + 1x1 conv + BN
                s[f"{p}.downsample.1.weight"] = (planes * 4, inplanes, 1, 1)
                s |= _bn(f"{p}.downsample.2", planes * 4)
            inplanes = planes * 4
    s["fc.weight"], s["fc.bias"] = (1000, 2048), (1000,)
    return s


def official_head_shapes(m2s: bool) -> dict[str, tuple[int, ...]]:
    """The head tensors of the official ``MSNet``/``M2SNet`` (``model/miccai_msnet.py``), by hand."""
    convs = {"x5_dem_1": 2048, "x4_dem_1": 1024, "x3_dem_1": 512, "x2_dem_1": 256, "x5_dem_5": 2048}
    for name in ("x5_x4", "x4_x3", "x3_x2", "x2_x1", "x5_x4_x3", "x4_x3_x2", "x3_x2_x1", "x5_x4_x3_x2",
                 "x4_x3_x2_x1", "x5_dem_4", "x5_x4_x3_x2_x1", "level3", "level2", "level1",
                 "output4", "output3", "output2"):  # fmt: skip
        convs[name] = 64
    s: dict[str, tuple[int, ...]] = {}
    for name, cin in convs.items():
        s[f"{name}.0.weight"], s[f"{name}.0.bias"] = (64, cin, 3, 3), (64,)
        s |= _bn(f"{name}.1", 64)
    s["output1.0.weight"], s["output1.0.bias"] = (1, 64, 3, 3), (1,)
    if m2s:  # CNN1's fixed weight/bias are not registered (plain tensors), only its BN is
        s |= _bn("conv_3.norm", 64) | _bn("conv_5.norm", 64)
    return s


@pytest.fixture(scope="module")
def timm_res2net() -> dict[str, torch.Tensor]:
    """timm's full res2net50d (with its classifier ``fc``), random weights."""
    import timm

    return timm.create_model("res2net50d", pretrained=False).state_dict()


def test_timm_res2net50d_has_the_official_res2net_tensor_layout(timm_res2net: dict) -> None:
    assert {k: tuple(v.shape) for k, v in timm_res2net.items()} == official_res2net50_v1b_26w_4s_shapes()


def _official_reference_forward(
    sd: dict[str, torch.Tensor], feats: list[torch.Tensor], size: tuple[int, int], m2s: bool
) -> torch.Tensor:
    """The official head written independently from official tensor names (eval-mode BN, literal ones conv)."""

    def bn(name: str, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            False,
        )

    def cbr(name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(bn(f"{name}.1", F.conv2d(x, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], padding=1)))

    def up(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=False)

    def cnn1(k: int, x: torch.Tensor) -> torch.Tensor:
        return F.relu(
            bn(f"conv_{k}.norm", F.conv2d(x, torch.ones(64, 64, k, k), torch.zeros(64), padding=k // 2))
        )

    def su(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = up(a, b)
        d = (a - b).abs()
        if m2s:
            d = d + (cnn1(3, a) - cnn1(3, b)).abs() + (cnn1(5, a) - cnn1(5, b)).abs()
        return cbr(name, d)

    x1, x2, x3, x4, x5 = feats
    x5d, x4d, x3d, x2d = cbr("x5_dem_1", x5), cbr("x4_dem_1", x4), cbr("x3_dem_1", x3), cbr("x2_dem_1", x2)
    x5_4, x4_3, x3_2, x2_1 = (
        su("x5_x4", x5d, x4d),
        su("x4_x3", x4d, x3d),
        su("x3_x2", x3d, x2d),
        su("x2_x1", x2d, x1),
    )
    x5_4_3, x4_3_2, x3_2_1 = (
        su("x5_x4_x3", x5_4, x4_3),
        su("x4_x3_x2", x4_3, x3_2),
        su("x3_x2_x1", x3_2, x2_1),
    )
    x5_4_3_2, x4_3_2_1 = su("x5_x4_x3_x2", x5_4_3, x4_3_2), su("x4_x3_x2_x1", x4_3_2, x3_2_1)
    x5_4_3_2_1 = su("x5_x4_x3_x2_x1", cbr("x5_dem_4", x5_4_3_2), x4_3_2_1)
    level4 = x5_4
    level3 = cbr("level3", x4_3 + x5_4_3)
    level2 = cbr("level2", x3_2 + x4_3_2 + x5_4_3_2)
    level1 = cbr("level1", x2_1 + x3_2_1 + x4_3_2_1 + x5_4_3_2_1)
    o4 = cbr("output4", up(cbr("x5_dem_5", x5), level4) + level4)
    o3 = cbr("output3", up(o4, level3) + level3)
    o2 = cbr("output2", up(o3, level2) + level2)
    o1 = F.conv2d(up(o2, level1) + level1, sd["output1.0.weight"], sd["output1.0.bias"], padding=1)
    return F.interpolate(o1, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["msnet", "m2snet"])
def test_official_checkpoint_loads_exactly(name: str, models: dict[str, MSNet], tmp_path: Path) -> None:
    m2s = name == "m2snet"
    src = models[name]
    _randomize_bn_stats(src, seed=1)
    off = official_state_dict(src)
    # the official file layout: resnet.* (with the unused fc) + the head names of miccai_msnet.py
    off["resnet.fc.weight"], off["resnet.fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    expected = {
        f"resnet.{k}": v for k, v in official_res2net50_v1b_26w_4s_shapes().items()
    } | official_head_shapes(m2s)
    assert {k: tuple(v.shape) for k, v in off.items()} == expected
    wrapped = {f"module.{k}": v for k, v in off.items()}  # DataParallel's prefix is stripped
    if m2s:  # from a state_dict in memory
        source: Path | dict = wrapped
    else:  # from a file, as torch.save(net.state_dict(), 'model-50') writes it
        source = tmp_path / "model-50"
        torch.save(wrapped, source)

    fresh = build_model(name)
    report = load_official_checkpoint(fresh, source)
    assert report.ok and report.matched == report.expected and not report.unexpected
    ours, theirs = src.state_dict(), fresh.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    src.eval()
    fresh.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = fresh(x).logits
        assert torch.equal(src(x).logits, y)
        ref = _official_reference_forward(off, fresh.backbone(x), (64, 96), m2s)
    # random weights with random BN statistics give large activations: compare relative to their scale
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_official_checkpoint_errors(models: dict[str, MSNet]) -> None:
    # every error is raised before anything is copied, so the shared models stay untouched
    off = official_state_dict(models["m2snet"])
    with pytest.raises(WeightLoadError, match="M2SNet checkpoint"):
        load_official_checkpoint(models["msnet"], off)
    del off["x5_x4.0.weight"]
    with pytest.raises(WeightLoadError, match=r"1 missing \(e\.g\. pyramid\.units\.0\.3\.0\.weight\)"):
        load_official_checkpoint(models["m2snet"], off)
    off = official_state_dict(models["m2snet"])
    off["conv_3.weight"] = torch.full((64, 64, 3, 3), 2.0)
    with pytest.raises(WeightLoadError, match="fixed constant"):
        load_official_checkpoint(models["m2snet"], off)


# -- backbone weight files ---------------------------------------------------------------------------


def test_backbone_file_loads_strictly_and_adapts_in_channels(timm_res2net: dict, tmp_path: Path) -> None:
    sd = {f"resnet.{k}": v for k, v in timm_res2net.items()}  # official naming, fc included
    path = tmp_path / "res2net50_v1b_26w_4s.pth"
    torch.save(sd, path)
    enc = TimmEncoder("res2net50d", in_channels=1, pretrained=str(path))
    got = enc.model.state_dict()
    assert torch.allclose(got["conv1.0.weight"], timm_res2net["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(got["layer4.2.bn3.running_var"], timm_res2net["layer4.2.bn3.running_var"])
    assert torch.equal(got["layer2.0.convs.1.weight"], timm_res2net["layer2.0.convs.1.weight"])

    del sd["resnet.layer3.1.conv3.weight"]
    with pytest.raises(WeightLoadError, match=r"x\.pth: 434/435 expected tensors matched; 1 missing"):
        enc.load_backbone_state_dict(
            {k: v for k, v in sd.items() if k != "resnet.conv1.0.weight"}
            | {"resnet.conv1.0.weight": torch.zeros(32, 1, 3, 3)},
            source="x.pth",
        )


def test_load_matching_reports_shape_mismatch_and_unexpected() -> None:
    lin = torch.nn.Linear(3, 2)
    with pytest.raises(
        WeightLoadError, match=r"1/2 expected tensors matched; 1 with a different shape .*; 1 unexpected"
    ):
        load_matching(
            lin,
            {"weight": torch.zeros(2, 3), "bias": torch.zeros(3), "extra": torch.zeros(1)},
            source="f.pth",
        )
    assert torch.count_nonzero(lin.weight) > 0  # nothing was loaded
    report = load_matching(lin, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    assert report.ok and report.matched == 2 and torch.count_nonzero(lin.weight) == 0


# -- recipes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("recipe", "name"), [("m2snet_polyp", "m2snet"), ("msnet_polyp", "msnet")])
def test_polyp_recipes_validate_and_match_the_model(recipe: str, name: str, models: dict[str, MSNet]) -> None:
    from medseg.config import load_config
    from medseg.engine.optim import param_groups
    from medseg.losses import Criterion

    # default = the official train.py / dataset_medical.py (NOTES §2, §7 item 7)
    cfg = load_config(recipe)
    assert cfg.model.name == name and cfg.model.kwargs == {"pretrained": True}
    d = cfg.data
    assert d.size == (352, 352) and d.batch_size == 16 and d.multiscale == [224, 256, 288, 320, 352]
    assert d.augment.flip and d.augment.rotate_deg == 10 and d.normalize.kind == "imagenet"
    # the official mean/std on 0-255 pixels, written for [0, 1] pixels
    assert [m * 255 for m in d.normalize.mean] == pytest.approx([124.55, 118.90, 102.94], abs=1e-9)
    assert [s * 255 for s in d.normalize.std] == pytest.approx([56.77, 55.97, 57.50], abs=1e-9)
    # the PraNet layout: TrainDataset (Kvasir 900 + ClinicDB 550), every TestDataset/<set>
    assert (d.format, d.train_split, d.val_split, d.test_split) == ("pranet", "train", None, "test")
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 0.05, 0.9, True, 5e-4)
    assert cfg.schedule.name == "triangle" and cfg.trainer.max_epochs == 50
    assert cfg.trainer.precision == "16-mixed"  # train.py: AMP fp16 + GradScaler
    assert [(t.loss, t.weight, t.kwargs) for t in cfg.loss.terms] == [
        ("structure", 1.0, {"legacy_pranet_bug": True}),  # reduce='none': the unweighted BCE
        ("lossnet", 0.1, {"weights": "imagenet"}),
    ]
    # every parameter at 0.05: the official 'bkbone' group matches nothing
    assert o.param_groups == []
    groups = param_groups(models[name], o)
    assert [(g["name"], g["lr"]) for g in groups] == [("default", 0.05)]
    assert sum(p.numel() for p in groups[0]["params"]) == count_parameters(models[name])

    # paper_text: backbone 0.005 / rest 0.05 (Sec. 4.3), weighted BCE and LossNet weight 1 (Eq. 4)
    text = load_config(recipe, ["preset=paper_text"])
    assert [(t.loss, t.weight, t.kwargs) for t in text.loss.terms] == [
        ("structure", 1.0, {}),
        ("lossnet", 1.0, {"weights": "imagenet"}),
    ]
    groups = {g["name"]: g for g in param_groups(models[name], text.optim)}
    assert groups["backbone."]["lr"] == pytest.approx(0.005) and groups["default"]["lr"] == 0.05
    assert sum(p.numel() for p in groups["backbone."]["params"]) == BACKBONE_PARAMS
    assert (
        sum(p.numel() for p in groups["default"]["params"])
        == count_parameters(models[name]) - BACKBONE_PARAMS
    )

    offline = load_config(recipe, ["preset=offline"])
    assert offline.model.kwargs["pretrained"] is None
    assert [(t.loss, t.kwargs) for t in offline.loss.terms] == [("structure", {"legacy_pranet_bug": True})]
    Criterion.from_config(offline.loss)  # builds without any download
    eq4 = load_config(recipe, ["preset=paper_eq4"]).loss.terms
    assert [t.weight for t in eq4] == [1.0, 1.0] and eq4[0].kwargs == {"legacy_pranet_bug": True}
    kvasir = load_config(recipe, ["preset=kvasir"]).data
    assert (kvasir.format, kvasir.train_split, kvasir.test_split) == ("image_folder", "pranet_train", "pranet_test")
    # cpu: from scratch, so no backbone lr reduction, even after paper_text
    for presets in (["preset=cpu"], ["preset=[paper_text, cpu]"]):
        cpu = load_config(recipe, presets)
        assert cpu.data.size == (128, 128) and cpu.model.kwargs["pretrained"] is None
        assert (cpu.optim.name, cpu.optim.lr, cpu.schedule.name) == ("adamw", 0.001, "constant")
        assert cpu.optim.param_groups == [] and cpu.trainer.max_epochs == 3
