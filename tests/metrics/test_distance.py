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


# ----------------------------------------------------------------------------- the fast path
# surface_distances / evaluate_case crop to the box of the labelled voxels, pad it with background,
# search the nearest border voxel on the grid (offsets within 2 voxels, nearest first) and fall back
# to a k-d tree for the voxels left. These cases are where a crop or a search radius could go wrong.
def _medpy_all(mb, p: np.ndarray, g: np.ndarray, spacing) -> dict[str, float]:
    return {
        "hd95": mb.hd95(p, g, voxelspacing=spacing),
        "hd": mb.hd(p, g, voxelspacing=spacing),
        "asd": mb.asd(p, g, voxelspacing=spacing),
        "assd": mb.assd(p, g, voxelspacing=spacing),
    }


def _ours_all(p: np.ndarray, g: np.ndarray, spacing) -> dict[str, float]:
    return {"hd95": hd95(p, g, spacing), "hd": hd(p, g, spacing), "asd": asd(p, g, spacing), "assd": assd(p, g, spacing)}


def _crop_cases() -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...] | float | None]]:
    cases = []
    # 2D: structures filling whole rows/columns up to the array edges (the edge is background)
    g = np.zeros((20, 24), dtype=bool)
    g[:, :7] = True
    p = np.zeros_like(g)
    p[:9, 3:12] = True
    cases += [("2d edge columns", p, g, None), ("2d edge columns aniso", p, g, (0.6, 2.5))]
    # 2D: the whole array vs a corner pixel; a single pixel each in opposite corners
    full = np.ones((9, 11), dtype=bool)
    corner = np.zeros_like(full)
    corner[-1, -1] = True
    other = np.zeros_like(full)
    other[0, 0] = True
    cases += [("2d full vs corner", full, corner, (1.5, 0.5)), ("2d opposite corners", other, corner, None)]
    # 3D: tiny specks far apart (only the k-d tree reaches them), iso and anisotropic
    g = np.zeros((16, 40, 36), dtype=bool)
    g[7:10, 18:23, 16:20] = True
    p = g.copy()
    p[0, 0, 0] = p[15, 39, 35] = p[0, 39, 0] = True  # specks in three corners
    q = np.zeros_like(g)
    q[2, 3, 4] = q[13, 30, 31] = True  # two single voxels only
    cases += [
        ("3d specks in corners", p, g, None),
        ("3d specks aniso", p, g, (5.0, 0.7, 0.9)),
        ("3d two voxels", q, g, (2.0, 1.0, 1.0)),
        ("3d two voxels vs specks", q, p, (0.5, 3.0, 1.0)),
    ]
    # 3D: slabs touching opposite faces, shifted: distances across the whole box
    g = np.zeros((6, 14, 15), dtype=bool)
    g[:, :, :4] = True
    p = np.zeros_like(g)
    p[:3, 5:, 9:] = True
    cases += [("3d face slabs", p, g, None), ("3d face slabs aniso", p, g, (8.0, 1.2, 1.2))]
    # distances exactly at the search radius (2 voxels) and just beyond (sqrt 5), along every axis
    for ax in range(3):
        g = np.zeros((9, 10, 11), dtype=bool)
        g[3:6, 3:6, 3:6] = True
        for shift in (2, 3):
            cases.append((f"3d cube shift {shift} axis {ax}", np.roll(g, shift, axis=ax), g, None))
    g = np.zeros((9, 10, 11), dtype=bool)
    g[4, 4, 4] = True
    p = np.zeros_like(g)
    p[4, 5, 6] = True  # sqrt(5): outside the radius-2 ball
    cases += [("3d sqrt5", p, g, None), ("3d sqrt5 aniso", p, g, (1.0, 0.9, 1.1))]
    return cases


@pytest.mark.parametrize("name", [c[0] for c in _crop_cases()])
def test_crop_and_search_cases_agree_with_medpy(name: str) -> None:
    mb = pytest.importorskip("medpy.metric.binary")
    _, p, g, spacing = next(c for c in _crop_cases() if c[0] == name)
    for a, b in ((p, g), (g, p)):
        ours, ref = _ours_all(a, b, spacing), _medpy_all(mb, a, b, spacing)
        for m in ref:
            assert ours[m] == pytest.approx(ref[m], abs=1e-9), (name, m)
    # the directed sets themselves, voxel by voxel in C order
    ref_fn = getattr(mb, "__surface_distances", None)
    if ref_fn is not None:
        d_pg, d_gp = surface_distances(p, g, spacing)
        np.testing.assert_allclose(np.sort(d_pg), np.sort(ref_fn(p, g, spacing)), atol=1e-9)
        np.testing.assert_allclose(np.sort(d_gp), np.sort(ref_fn(g, p, spacing)), atol=1e-9)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_grid_search_equals_kd_tree_at_every_radius(ndim: int) -> None:
    """The grid search (any radius) + k-d tree fallback gives the plain k-d tree's distances exactly,
    voxel by voxel, for every label of random label maps (borders touching the edges, specks)."""
    from medseg.metrics.distance import border_coords, border_maps, directed_distances, label_distances

    rng = np.random.default_rng(40 + ndim)
    shape = {1: (60,), 2: (30, 26), 3: (9, 17, 15)}[ndim]
    for trial in range(4):
        labs = [
            np.argmax(gaussian_filter(rng.standard_normal((4, *shape)), (0,) + (1.5,) * ndim), axis=0)
            for _ in range(2)
        ]
        labs[1][rng.random(shape) < 0.02] = 3  # specks
        spacing = None if trial == 0 else tuple(rng.uniform(0.4, 4.0, ndim))
        ref_p, ref_g = border_coords(labs[0], 4), border_coords(labs[1], 4)
        for radius in (0.5, 1.0, 2.0, 3.5, 6.0) + ((40.0,) if ndim < 3 else ()):
            maps = border_maps(labs[0], labs[1], 4, spacing, radius=radius)
            for c in (1, 2, 3):
                if not len(ref_p[c - 1]) or not len(ref_g[c - 1]):
                    continue
                want = directed_distances(ref_p[c - 1], ref_g[c - 1], spacing)
                got = label_distances(maps, c)
                np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-12)


def test_border_map_equals_border_coords_and_box() -> None:
    from medseg.metrics.distance import BorderMap, border_coords, foreground_box

    rng = np.random.default_rng(11)
    for shape in ((13,), (11, 14), (5, 9, 12)):
        lab = rng.integers(0, 4, size=shape) * (rng.random(shape) < 0.5)
        bm = BorderMap(lab, 4, pad=(2,) * len(shape))
        for c, want in zip((1, 2, 3), border_coords(lab, 4)):
            np.testing.assert_array_equal(bm.coords(c) - 2, want)  # C order, padded by 2
        zero = np.zeros(shape, dtype=np.uint8)
        assert foreground_box(zero, zero) is None
        one = zero.copy()
        one[(-1,) * len(shape)] = 1
        assert foreground_box(zero, one) == tuple(slice(n - 1, n) for n in shape)
        assert foreground_box(lab, zero.astype(bool)) == tuple(
            slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(lab)
        )


def test_evaluate_case_crop_cases_agree_with_medpy() -> None:
    """Multi-class label maps whose classes touch the array edges, with far specks and anisotropic
    spacing, 2D and 3D: every row against medpy (dc / hd95 / asd / assd) and the overlap counts
    against the whole arrays (the crop must not lose the true negatives)."""
    mb = pytest.importorskip("medpy.metric.binary")
    from medseg.metrics import evaluate_case
    from medseg.metrics.overlap import specificity

    rng = np.random.default_rng(23)
    for shape, spacing in (((30, 44), None), ((30, 44), (2.0, 0.5)), ((7, 33, 29), None), ((7, 33, 29), (6.0, 0.8, 1.1))):
        gt = np.zeros(shape, dtype=np.uint8)
        gt[(slice(0, 3),) + (slice(None),) * (len(shape) - 1)] = 1  # a slab along the first face
        centre = tuple(slice(n // 3, n // 3 + 4) for n in shape)
        gt[centre] = 2
        gt[(slice(-2, None),) * len(shape)] = 3  # the far corner
        pred = np.roll(gt, 1, axis=len(shape) - 1)
        pred[tuple(rng.integers(0, n, 5) for n in shape)] = rng.integers(1, 4, 5)  # specks anywhere
        for metrics in (("dice", "hd95", "asd", "assd", "specificity"), ("dice", "hd95")):
            rows = evaluate_case(pred, gt, 4, spacing=spacing, metrics=metrics)
            for r in rows:
                p, g = pred == r["class"], gt == r["class"]
                assert r["dice"] == pytest.approx(mb.dc(p, g), abs=1e-12)
                assert r["hd95"] == pytest.approx(mb.hd95(p, g, voxelspacing=spacing), abs=1e-9)
                if "asd" in metrics:
                    assert r["asd"] == pytest.approx(mb.asd(p, g, voxelspacing=spacing), abs=1e-9)
                    assert r["assd"] == pytest.approx(mb.assd(p, g, voxelspacing=spacing), abs=1e-9)
                    assert r["specificity"] == pytest.approx(specificity(p, g), abs=1e-12)


def test_evaluate_case_all_background_and_tiny_structure_in_a_big_array() -> None:
    from medseg.metrics import evaluate_case
    from medseg.metrics.overlap import confusion

    zero = np.zeros((4, 50, 60), dtype=np.int64)
    rows = evaluate_case(zero, zero, 3, metrics=("dice", "hd95", "specificity"))
    assert [(r["dice"], r["hd95"], r["specificity"]) for r in rows] == [(0.0, 0.0, 1.0)] * 2
    p, g = zero.copy(), zero.copy()
    p[1, 10, 10] = 1
    g[1, 10, 11] = 1
    g[3, 49, 59] = 2
    (r1, r2) = evaluate_case(p, g, 3, metrics=("dice", "hd95", "precision", "specificity"))
    assert (r1["dice"], r1["hd95"]) == (0.0, 1.0)
    tp, fp, fn, tn = confusion(p == 1, g == 1)
    assert r1["specificity"] == pytest.approx(tn / (tn + fp))
    assert (r2["dice"], r2["hd95"], r2["pred_empty"]) == (0.0, 0.0, True)
