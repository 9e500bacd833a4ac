"""Surface distances: hand-computed values, medpy and MONAI as oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medseg.metrics import asd, assd, distances_from_sets, hd, hd95, surface_distances


def _square_pair(shift: int, axis: int = 0, ndim: int = 2, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Two 4-wide squares/cubes, the second shifted by ``shift`` along ``axis``."""
    p = np.zeros((size,) * ndim, dtype=bool)
    p[(slice(2, 6),) * ndim] = True
    g = np.roll(p, shift, axis=axis)
    return p, g


# ----------------------------------------------------------------------------- hand-computed
def test_single_pixels_2d() -> None:
    p = np.zeros((8, 9), dtype=bool)
    g = np.zeros((8, 9), dtype=bool)
    p[2, 3] = True
    g[5, 7] = True  # offset (3, 4) -> 5
    for f in (hd95, hd, asd, assd):
        assert f(p, g) == pytest.approx(5.0)
    # spacing (2, 1) along axis 0: sqrt(6^2 + 4^2)
    assert hd95(p, g, spacing=(2, 1)) == pytest.approx(math.sqrt(52))
    assert hd95(p, g, spacing=(2, 1), method="monai") == pytest.approx(math.sqrt(52))
    d_pg, d_gp = surface_distances(p, g)
    np.testing.assert_allclose(d_pg, [5.0])
    np.testing.assert_allclose(d_gp, [5.0])


def test_squares_shifted_by_3_2d() -> None:
    # 4x4 squares, rows 2-5 and rows 5-8 (same columns). Border of each: its 12 edge pixels.
    # pred border -> gt border: row 2 (4 px) -> 3; rows 3/4 at cols 2 and 5 -> 2, 2, 1, 1;
    # row 5 (4 px) -> 0 (shared row). By symmetry gt -> pred gives the same multiset.
    # pooled 24 values: 8x0, 4x1, 4x2, 8x3; P95 at 0.95*23 = 21.85 -> 3.
    # ASD = (4*3 + 2*2 + 2*1) / 12 = 1.5; ASSD = 1.5; HD = 3.
    p, g = _square_pair(3, axis=0)
    d_pg, d_gp = surface_distances(p, g)
    np.testing.assert_allclose(np.sort(d_pg), [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    np.testing.assert_allclose(np.sort(d_gp), [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
    assert hd(p, g) == pytest.approx(3.0)
    assert hd95(p, g) == pytest.approx(3.0)
    assert hd95(p, g, method="monai") == pytest.approx(3.0)
    assert asd(p, g) == pytest.approx(1.5)
    assert assd(p, g) == pytest.approx(1.5)
    # spacing 2 along the shift axis doubles every distance; spacing along the other axis does not
    assert hd(p, g, spacing=(2, 1)) == pytest.approx(6.0)
    assert hd95(p, g, spacing=(2, 1)) == pytest.approx(6.0)
    assert asd(p, g, spacing=(2, 1)) == pytest.approx(3.0)
    assert hd95(p, g, spacing=(1, 2)) == pytest.approx(3.0)
    # scalar spacing applies to all axes
    assert hd95(p, g, spacing=0.5) == pytest.approx(1.5)


def test_cubes_shifted_by_3_3d() -> None:
    p, g = _square_pair(3, axis=0, ndim=3)
    assert hd(p, g) == pytest.approx(3.0)
    assert hd95(p, g) == pytest.approx(3.0)
    assert hd95(p, g, spacing=(2, 1, 1)) == pytest.approx(6.0)
    assert hd95(p, g, spacing=(1, 2, 2)) == pytest.approx(3.0)
    p, g = _square_pair(3, axis=2, ndim=3)
    assert hd(p, g, spacing=(1, 1, 0.5)) == pytest.approx(1.5)


def test_identical_masks_have_zero_distance() -> None:
    p, _ = _square_pair(0)
    for f in (hd95, hd, asd, assd):
        assert f(p, p) == 0.0


def test_mask_touching_the_array_edge() -> None:
    # the array edge is background for the surface (medpy's erosion with border_value 0)
    p = np.zeros((5, 5), dtype=bool)
    p[:, :] = True
    g = np.zeros((5, 5), dtype=bool)
    g[0, 0] = True
    d_pg, d_gp = surface_distances(p, g)
    assert d_pg.size == 16  # all edge pixels of the full square are border
    assert d_gp.tolist() == [0.0]
    assert hd(p, g) == pytest.approx(math.hypot(4, 4))


def test_empty_masks_raise_or_return_the_given_value() -> None:
    p, g = _square_pair(3)
    e = np.zeros_like(p)
    with pytest.raises(ValueError, match="empty"):
        surface_distances(e, g)
    with pytest.raises(ValueError, match="empty"):
        hd95(p, e)
    assert hd95(e, g, empty=0.0) == 0.0
    assert math.isnan(asd(p, e, empty=math.nan))


def test_argument_validation() -> None:
    p, g = _square_pair(3)
    with pytest.raises(ValueError, match="spacing"):
        hd95(p, g, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(p, g, spacing=(0, 1))
    with pytest.raises(ValueError, match="HD95 method"):
        hd95(p, g, method="deepmind")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes differ"):
        hd95(p, g[:-1])
    with pytest.raises(ValueError, match="ASSD method"):
        assd(p, g, method="median")  # type: ignore[arg-type]


def test_distances_from_sets() -> None:
    d_pg = np.array([0.0, 1.0, 4.0])
    d_gp = np.array([2.0])
    out = distances_from_sets(d_pg, d_gp)
    assert out["hd"] == 4.0
    assert out["asd"] == pytest.approx(5 / 3)
    assert out["assd"] == pytest.approx(7 / 4)  # pooled mean (medpy >= 0.5)
    assert distances_from_sets(d_pg, d_gp, metrics=("assd",), assd_method="mean")["assd"] == pytest.approx(
        (5 / 3 + 2) / 2
    )
    assert out["hd95"] == pytest.approx(np.percentile([0, 1, 4, 2], 95))
    monai = distances_from_sets(d_pg, d_gp, hd_method="monai", metrics=("hd95",))["hd95"]
    assert monai == pytest.approx(max(np.percentile(d_pg, 95), 2.0))


# ----------------------------------------------------------------------------- oracles
def _blob_cases(
    ndim: int, n: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]]:
    """Random smooth blobs (some touching the edges, some disjoint) with iso/anisotropic spacing."""
    rng = np.random.default_rng(seed)
    shape = (40, 36) if ndim == 2 else (14, 18, 16)
    cases = []
    while len(cases) < n:
        sigma = rng.uniform(1.5, 3.0)
        a = gaussian_filter(rng.standard_normal(shape), sigma) > rng.uniform(0.05, 0.3)
        if len(cases) % 3 == 2:  # a shifted, eroded copy: nested/overlapping surfaces
            b = np.roll(a, int(rng.integers(-3, 4)), axis=int(rng.integers(ndim))) & (
                rng.random(shape) > 0.05
            )
        else:
            b = gaussian_filter(rng.standard_normal(shape), sigma) > rng.uniform(0.05, 0.3)
        if not a.any() or not b.any():
            continue
        k = len(cases) % 3
        spacing = (
            None if k == 0 else (tuple(rng.uniform(0.4, 3.0, ndim)) if k == 1 else float(rng.uniform(0.5, 2)))
        )
        cases.append((a, b, spacing))
    return cases


@pytest.mark.parametrize("ndim", [2, 3])
def test_agrees_with_medpy(ndim: int) -> None:
    mb = pytest.importorskip("medpy.metric.binary")
    for a, b, spacing in _blob_cases(ndim, 20, seed=ndim):
        assert hd95(a, b, spacing) == pytest.approx(mb.hd95(a, b, voxelspacing=spacing), abs=1e-6)
        assert hd(a, b, spacing) == pytest.approx(mb.hd(a, b, voxelspacing=spacing), abs=1e-6)
        assert asd(a, b, spacing) == pytest.approx(mb.asd(a, b, voxelspacing=spacing), abs=1e-6)
        assert asd(b, a, spacing) == pytest.approx(mb.asd(b, a, voxelspacing=spacing), abs=1e-6)
        assert assd(a, b, spacing) == pytest.approx(mb.assd(a, b, voxelspacing=spacing), abs=1e-6)
    # the directed sets themselves (medpy's private helper), same multiset
    a, b, spacing = _blob_cases(ndim, 2, seed=10 + ndim)[1]
    d_pg, d_gp = surface_distances(a, b, spacing)
    ref = getattr(mb, "__surface_distances", None)
    if ref is not None:
        np.testing.assert_allclose(np.sort(d_pg), np.sort(ref(a, b, spacing)), atol=1e-9)
        np.testing.assert_allclose(np.sort(d_gp), np.sort(ref(b, a, spacing)), atol=1e-9)


def test_assd_mean_method_is_old_medpy() -> None:
    # medpy <= 0.4: assd = mean(asd(a, b), asd(b, a))
    for a, b, spacing in _blob_cases(2, 4, seed=7):
        expected = (asd(a, b, spacing) + asd(b, a, spacing)) / 2
        assert assd(a, b, spacing, method="mean") == pytest.approx(expected, abs=1e-12)


def _monai_hd95(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...] | None) -> float:
    metrics = pytest.importorskip("monai.metrics")
    onehot = [np.stack([~m, m])[None].astype(np.float32) for m in (a, b)]  # [B=1, C=2, ...]
    out = metrics.compute_hausdorff_distance(
        onehot[0], onehot[1], include_background=False, percentile=95, directed=False, spacing=spacing
    )
    return float(out[0, 0])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_monai_method_agrees_with_monai() -> None:
    pytest.importorskip("monai.metrics")
    cases = _blob_cases(2, 3, seed=21) + _blob_cases(3, 3, seed=22)
    for a, b, spacing in cases:
        sp = None if spacing is None else tuple(np.broadcast_to(spacing, (a.ndim,)).tolist())
        assert hd95(a, b, sp, method="monai") == pytest.approx(_monai_hd95(a, b, sp), rel=1e-5, abs=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_monai_and_medpy_definitions_differ() -> None:
    # gt: a 20x20 square (76 border px); pred: the same square plus a far 2x3 blob (6 border px).
    # Only pred->gt has outliers: 6 of 82 directed distances (7 %) -> the directed P95 (MONAI) is
    # an outlier distance; 6 of 158 pooled distances (4 %) -> the pooled P95 (medpy) stays 0.
    g = np.zeros((50, 50), dtype=bool)
    g[2:22, 2:22] = True
    p = g.copy()
    p[40:42, 40:43] = True
    medpy_v = hd95(p, g, method="medpy")
    monai_v = hd95(p, g, method="monai")
    assert medpy_v == pytest.approx(0.0)
    assert monai_v > 20.0
    assert monai_v >= medpy_v
    mb = pytest.importorskip("medpy.metric.binary")
    assert medpy_v == pytest.approx(mb.hd95(p, g), abs=1e-6)
    assert monai_v == pytest.approx(_monai_hd95(p, g, None), rel=1e-5)


def test_border_coords_by_hand() -> None:
    from medseg.metrics.distance import border_coords

    lab = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 1, 1, 2],
            [0, 1, 1, 1, 2],
            [0, 0, 0, 0, 2],
        ]
    )
    b1, b2, b3 = border_coords(lab, 4)
    # class 1: the 3x3 block minus its centre (2, 2), whose four face-neighbours are all 1
    assert b1.tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 3], [3, 1], [3, 2], [3, 3]]
    # class 2 lies on the array edge: every voxel is border; class 3 is absent
    assert b2.tolist() == [[2, 4], [3, 4], [4, 4]]
    assert b3.shape == (0, 2)


def test_multiclass_case_agrees_with_medpy_per_class() -> None:
    """evaluate_case's one-pass borders of a label map give medpy's per-class HD95 / ASD / ASSD."""
    mb = pytest.importorskip("medpy.metric.binary")
    from medseg.metrics import evaluate_case

    rng = np.random.default_rng(7)
    for shape, spacing in (((40, 48), None), ((6, 30, 34), (3.0, 0.8, 0.7))):
        gt = np.zeros(shape, dtype=np.int64)
        pred = np.zeros(shape, dtype=np.int64)
        for c in (1, 2, 3):  # overlapping random boxes: classes touch each other and the edges
            for lab in (gt, pred):
                lo = [int(rng.integers(0, s - 3)) for s in shape]
                hi = [int(rng.integers(a + 2, s + 1)) for a, s in zip(lo, shape)]
                lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = c
        pred[rng.random(shape) < 0.01] = 2  # specks far from the organ
        rows = evaluate_case(pred, gt, 4, spacing=spacing, metrics=("dice", "hd95", "asd", "assd"))
        for row in rows:
            p, g = pred == row["class"], gt == row["class"]
            if not p.any() or not g.any():
                continue
            assert row["dice"] == pytest.approx(mb.dc(p, g), abs=1e-12)
            assert row["hd95"] == pytest.approx(mb.hd95(p, g, voxelspacing=spacing), abs=1e-6)
            assert row["asd"] == pytest.approx(mb.asd(p, g, voxelspacing=spacing), abs=1e-6)
            assert row["assd"] == pytest.approx(mb.assd(p, g, voxelspacing=spacing), abs=1e-6)
