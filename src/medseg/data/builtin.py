"""Built-in synthetic datasets, deterministic by seed, written in real on-disk formats.

Two datasets are available (see :data:`BUILTIN_DATASETS`):

``phantom-ct``
    Abdominal-CT-like phantom, multi-class (labels in :data:`PHANTOM_CT_CLASSES`)::

        0 background
        1 liver         large organ (right + left lobe; the lesion is cut out of it)
        2 spleen        medium organ, intensity close to the liver's (location/shape tell them apart)
        3 kidney        medium: left and right kidney share ONE label (hilum/sinus excluded)
        4 gallbladder   small, fluid-dense, only in the middle third of the scan
        5 liver_lesion  small, hypodense, heterogeneous nodule, always inside the liver; often absent
        6 vessel        thin (~3 px wide at 128 px) contrast-filled curved vein running in-plane
                        from the splenic hilum towards the liver hilum (splenic/portal-vein-like)

    Unlabelled distractors: body wall (subcutaneous fat, muscle), spine with discs and posterior
    elements, ribs, paraspinal/psoas muscles, aorta and IVC (same contrast as the vessel but round),
    stomach with an air-fluid level (fluid as dense as the gallbladder), bowel loops with gas,
    mesenteric fat strands and lung bases.  Intensities are Hounsfield-like (portal-venous
    phase), with per-organ smoothed-noise texture, a smooth bias field, a slight blur (PSF) and
    correlated Gaussian noise.

    Anatomy is a function of a cranio-caudal level ``t`` (0 = liver dome, 1 = lower kidney
    poles, :data:`CT_T_MM` mm apart): every structure has a z-extent and its in-plane shape,
    position and size vary smoothly with ``t``, so 3D volumes are stacks of coherent slices.

    On disk (``DIR``)::

        images/<id>.png        8-bit grey, HU windowed with CT_WINDOW (level 40, width 400);
                               ids ct_0000, ct_0001, ...; size x size pixels
        masks/<id>.png         8-bit label indices 0..6
        splits/{train,val,test}.txt           ids of the 2D slices (70/15/15)
        volumes/dataset.json                  nnU-Net v2 style
        volumes/imagesTr/phantom_XXX_0000.nii.gz   HU as int16, 32 slices of min(size, 96)^2
                                                   (train + val volumes)
        volumes/labelsTr/phantom_XXX.nii.gz        uint8 labels
        volumes/imagesTs/phantom_XXX_0000.nii.gz   (test volumes)
        volumes/labelsTs/phantom_XXX.nii.gz        (test labels, for evaluation)
        volumes/splits/{train,val,test}.txt   volume case ids (``phantom_XXX``); the volume split
                                              decides imagesTr (train+val) vs imagesTs (test)

    The 2D slices are generated independently of the volumes (one random patient per slice, at a
    random level), so they contain every structure at varying sizes and many slices without the
    small structures.  A volume ``[D, H, W]`` (slice 0 = most caudal) is stored as the NIfTI
    voxel array ``(x, y, z) = (W, H, D)`` (so ``nib.load(f).get_fdata().transpose(2, 1, 0)`` gives
    it back), orientation L-P-S (``nib.aff2axcodes`` -> ``('L', 'P', 'S')``: columns run towards
    the patient's left, rows posterior, slices cranial), spacing ``CT_FOV_MM / size`` in-plane and
    ``CT_SLICE_MM`` = 5 mm between slices; images are HU in int16, labels uint8.

``phantom-endo``
    Endoscopy-like RGB frames (mucosa with folds, lumen, vessels, vignetting, specular highlights,
    blur, circular field of view) with one polyp-like lesion of 1-30 % of the image area::

        images/<id>.png   RGB (ids endo_0000, ...)
        masks/<id>.png    {0, 255}
        splits/{train,val,test}.txt

Generation is written into ``DIR.tmp-<pid>`` and renamed to ``DIR`` when complete (it also carries
a ``.complete`` marker and ``builtin.json`` with the parameters and, for phantom-ct, ``inputs``: the
normalisation that maps its HU volumes to its PNGs, which a run trained on the PNGs records and applies
to NIfTI inputs); :func:`generate` returns early
when ``DIR`` is complete and its parameters match, and regenerates otherwise.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.ndimage import zoom as nd_zoom

from medseg.utils import DataError, check_output_dir

logger = logging.getLogger(__name__)

#: Bump when the generated content changes: cached directories are then regenerated.
BUILTIN_VERSION = 1

BUILTIN_DATASETS: dict[str, str] = {
    "phantom-ct": (
        "Synthetic abdominal CT phantom: 2D windowed PNG slices (7 classes: liver, spleen, kidney, "
        "gallbladder, liver lesion, thin vessel) + 3D HU NIfTI volumes in nnU-Net v2 raw layout"
    ),
    "phantom-endo": "Synthetic endoscopy frames (RGB PNG) with one polyp-like lesion, binary masks",
}

PHANTOM_CT_CLASSES: list[str] = [
    "background",
    "liver",
    "spleen",
    "kidney",
    "gallbladder",
    "liver_lesion",
    "vessel",
]

#: CT window (level, width) in HU used to write the 8-bit PNG slices.
CT_WINDOW: tuple[float, float] = (40.0, 400.0)
#: In-plane field of view (mm) of the phantom; pixel spacing is ``CT_FOV_MM / size``.
CT_FOV_MM = 360.0
#: Cranio-caudal distance (mm) between level t=0 (liver dome) and t=1 (lower kidney poles).
CT_T_MM = 160.0
#: Slice spacing (mm) of the generated volumes.
CT_SLICE_MM = 5.0

DEFAULT_COUNTS = {"phantom-ct": 240, "phantom-endo": 200}
DEFAULT_VOLUMES = 10
VOLUME_DEPTH = 32
VOLUME_MAX_SIZE = 96
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

_STREAM = {"phantom-ct": 0, "phantom-endo": 1, "phantom-ct-volume": 2}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y downwards), shapes [1,H,W]."""
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1)[None, None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1)[None, :, None]
    return np.broadcast_to(x, (1, h, w)), np.broadcast_to(y, (1, h, w))


def _noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float], factor: int = 1
) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32).

    ``factor`` > 1 synthesises it on a grid ``factor`` times coarser in the last two axes and
    interpolates it back (much faster for large ``sigma``).
    """
    if factor > 1:
        low = tuple(shape[:-2]) + tuple(-(-n // factor) for n in shape[-2:])
        sig = tuple(sigma[:-2]) + tuple(s / factor for s in sigma[-2:])
        n = _noise(rng, low, sig)
        n = nd_zoom(
            n, [a / b for a, b in zip(shape, low, strict=True)], order=1, mode="nearest", grid_mode=True
        )[tuple(slice(0, k) for k in shape)]
    else:
        n = rng.standard_normal(shape, dtype=np.float32)
        if any(s > 0 for s in sigma):
            n = gaussian_filter(n, sigma, mode="reflect")
    return n / (n.std() + 1e-6)


def window_ct(hu: np.ndarray, level: float = CT_WINDOW[0], width: float = CT_WINDOW[1]) -> np.ndarray:
    """Map Hounsfield units to uint8 with a CT window (level/width)."""
    lo = level - width / 2
    return np.clip(np.rint((hu - lo) * (255.0 / width)), 0, 255).astype(np.uint8)


def _profile(t: np.ndarray, t0: float, tc: float, t1: float, power: float = 0.5) -> np.ndarray:
    """Ellipsoid-like cross-section scale along z: 0 outside [t0, t1], 1 at tc."""
    u = np.where(t < tc, (t - tc) / max(tc - t0, 1e-6), (t - tc) / max(t1 - tc, 1e-6))
    return np.clip(1 - u * u, 0, None) ** power


@dataclass
class _Blob:
    """A smooth random closed shape: rotated ellipse with Fourier-perturbed radius.

    Position drifts linearly with the level ``t`` and the cross-section scales with a z-profile.
    """

    cx: float
    cy: float
    ax: float
    ay: float
    rot: float = 0.0
    amps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    phases: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dphase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    z: tuple[float, float, float] | None = None  # (t0, tc, t1); None = whole scan
    dcx: float = 0.0
    dcy: float = 0.0
    power: float = 0.5

    @staticmethod
    def random_shape(rng: np.random.Generator, k: int = 4, amp: float = 0.08) -> dict:
        """Random Fourier coefficients for harmonics 2..k+1 (amplitude ~ amp/harmonic)."""
        ks = np.arange(2, k + 2)
        return {
            "amps": rng.uniform(0, amp, k) / np.sqrt(ks - 1),
            "phases": rng.uniform(0, 2 * np.pi, k),
            "dphase": rng.normal(0, 1.5, k),
        }

    def scale(self, t: np.ndarray) -> np.ndarray:
        if self.z is None:
            return np.ones_like(t)
        return _profile(t, *self.z, power=self.power)

    def center(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tc = 0.5 if self.z is None else self.z[1]
        return self.cx + self.dcx * (t - tc), self.cy + self.dcy * (t - tc)

    def level(
        self,
        fr: _Frame,
        t: np.ndarray,
        grow: float = 0.0,
        center: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """rho / r(theta), [D,H,W]: < scale(t) inside the shape (inf outside its bounding box).

        ``grow`` enlarges both semi-axes (units); ``center`` overrides the (t-dependent) centre.
        """
        cx, cy = self.center(t) if center is None else center
        cx = np.broadcast_to(np.asarray(cx, np.float32), t.shape)
        cy = np.broadcast_to(np.asarray(cy, np.float32), t.shape)
        ax, ay = self.ax + grow, self.ay + grow
        out = np.full((len(t), fr.h, fr.w), np.inf, np.float32)
        sc = self.scale(t).reshape(-1)
        smax = float(sc.max())
        if smax <= 0 or ax <= 0 or ay <= 0:
            return out
        if smax == float(sc.min()):
            act: slice | np.ndarray = slice(None)
        else:  # only slices where the shape exists
            act = np.flatnonzero(sc > 0)
            t, cx, cy = t[act], cx[act], cy[act]
        ext = max(ax, ay) * (1 + float(np.abs(self.amps).sum())) * max(smax, 1.0) * 1.05
        rs, cs = fr.window(
            float(cx.min()) - ext, float(cx.max()) + ext, float(cy.min()) - ext, float(cy.max()) + ext
        )
        if rs.start >= rs.stop or cs.start >= cs.stop:
            return out
        c, s = math.cos(self.rot), math.sin(self.rot)
        dx = fr.X[:, rs, cs] - cx
        dy = fr.Y[:, rs, cs] - cy
        u = (c * dx + s * dy) * np.float32(1 / ax)
        v = (-s * dx + c * dy) * np.float32(1 / ay)
        rho = np.sqrt(u * u + v * v)
        if len(self.amps):
            inv = 1 / np.maximum(rho, 1e-6)
            c1, s1 = u * inv, v * inv
            ck = c1 * c1 - s1 * s1  # cos/sin of 2*theta, then recurrence
            sk = 2 * s1 * c1
            r = np.ones_like(rho)
            for a, p, dp in zip(self.amps, self.phases, self.dphase, strict=True):
                ph = p + dp * t  # cos(k th + ph) = cos(k th) cos(ph) - sin(k th) sin(ph)
                r += (a * np.cos(ph)).astype(np.float32) * ck - (a * np.sin(ph)).astype(np.float32) * sk
                ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            rho = rho / r
        if isinstance(act, slice):
            out[:, rs, cs] = rho
        else:
            out[act, rs, cs] = rho
        return out

    def mask(self, fr: _Frame, t: np.ndarray, grow: float = 0.0) -> np.ndarray:
        return self.level(fr, t, grow) < self.scale(t)


class _Frame:
    """Sampling grid: unit coordinates X, Y [1,H,W] of every pixel after a patient placement."""

    def __init__(
        self, h: int, w: int, shift: Sequence[float] = (0.0, 0.0), rot: float = 0.0, zoom: float = 1.0
    ) -> None:
        gx, gy = _grid(h, w)
        self.h, self.w = h, w
        self._c, self._s, self._zoom, self._shift = math.cos(rot), math.sin(rot), zoom, tuple(shift)
        c, s = self._c, self._s
        self.X = ((c * (gx - shift[0]) + s * (gy - shift[1])) / zoom).astype(np.float32)
        self.Y = ((-s * (gx - shift[0]) + c * (gy - shift[1])) / zoom).astype(np.float32)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Row/column slices of the pixels covering the unit-space box [x0,x1] x [y0,y1]."""
        xs = np.array([x0, x1, x0, x1]) * self._zoom
        ys = np.array([y0, y0, y1, y1]) * self._zoom
        gx = self._c * xs - self._s * ys + self._shift[0]
        gy = self._s * xs + self._c * ys + self._shift[1]
        cols = (gx + 1) / 2 * self.w - 0.5
        rows = (gy + 1) / 2 * self.h - 0.5
        r0 = max(0, int(math.floor(rows.min())) - 1)
        r1 = min(self.h, int(math.ceil(rows.max())) + 2)
        c0 = max(0, int(math.floor(cols.min())) - 1)
        c1 = min(self.w, int(math.ceil(cols.max())) + 2)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _bezier(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Cubic Bezier: p [D,4,2], u [D,M] -> points [D,M,2]."""
    u = u[..., None]
    b = ((1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u * u * (1 - u), u**3)
    return sum(bi * p[:, i : i + 1, :] for i, bi in enumerate(b))


def _polyline_distance(fr: _Frame, pts: np.ndarray, reach: float) -> np.ndarray:
    """Distance of pixels to a polyline per slice, pts [D,M,2] -> [D,H,W] (inf beyond ``reach``)."""
    d = pts.shape[0]
    out = np.full((d, fr.h, fr.w), np.inf, np.float32)
    rs, cs = fr.window(
        float(pts[..., 0].min()) - reach,
        float(pts[..., 0].max()) + reach,
        float(pts[..., 1].min()) - reach,
        float(pts[..., 1].max()) + reach,
    )
    if rs.start >= rs.stop or cs.start >= cs.stop:
        return out
    xw, yw = fr.X[0, rs, cs], fr.Y[0, rs, cs]
    hw = xw.shape
    px = xw.reshape(1, -1, 1)
    py = yw.reshape(1, -1, 1)
    pts = pts.astype(np.float32)
    a = pts[:, None, :-1, :]  # [D,1,S,2]
    ab = pts[:, None, 1:, :] - a
    ab2 = (ab**2).sum(-1) + 1e-12
    apx = px - a[..., 0]
    apy = py - a[..., 1]
    s = np.clip((apx * ab[..., 0] + apy * ab[..., 1]) / ab2, 0, 1)
    dx = apx - s * ab[..., 0]
    dy = apy - s * ab[..., 1]
    out[:, rs, cs] = np.sqrt((dx * dx + dy * dy).min(-1)).reshape(d, *hw)
    return out


# --------------------------------------------------------------------------------------------------
# phantom-ct
# --------------------------------------------------------------------------------------------------
def _sample_ct_anatomy(rng: np.random.Generator) -> dict:
    """Draw one random patient: shapes, positions, z-extents and tissue intensities."""
    U = rng.uniform
    shp = _Blob.random_shape
    A: dict = {}
    A["shift"] = rng.normal(0, 0.03, 2)
    A["rot"] = float(rng.normal(0, 0.05))
    A["zoom"] = float(U(0.92, 1.05))

    A["body"] = _Blob(0.0, 0.08, U(0.82, 0.93), U(0.6, 0.7), **shp(rng, 3, 0.03))
    A["fat"] = float(U(0.03, 0.11))
    A["muscle"] = float(U(0.025, 0.04))

    # liver: right lobe (whole liver extent) + left lobe (upper part only)
    top, bot = U(-0.04, 0.04), U(0.65, 0.8)
    A["liver_r"] = _Blob(
        U(-0.45, -0.37),
        U(-0.02, 0.06),
        U(0.3, 0.36),
        U(0.38, 0.46),
        U(-0.2, 0.2),
        **shp(rng, 4, 0.08),
        z=(top, U(0.18, 0.3), bot),
        dcx=-0.15,
        dcy=0.12,
    )
    A["liver_l"] = _Blob(
        U(-0.05, 0.08),
        U(-0.34, -0.26),
        U(0.22, 0.32),
        U(0.1, 0.15),
        U(-0.35, 0.0),
        **shp(rng, 3, 0.08),
        z=(top, U(0.12, 0.2), U(0.35, 0.5)),
        dcx=-0.3,
    )
    A["spleen"] = _Blob(
        U(0.5, 0.58),
        U(0.1, 0.2),
        U(0.1, 0.14),
        U(0.17, 0.22),
        U(-0.7, -0.3),
        **shp(rng, 4, 0.1),
        z=(U(-0.1, 0.05), U(0.2, 0.3), U(0.45, 0.55)),
        dcy=0.1,
    )
    kz = U(0.28, 0.36)
    A["kidneys"] = []
    for side, dz in ((1, 0.0), (-1, U(0.04, 0.1))):  # image-right (patient left) kidney is higher
        rot = side * U(0.35, 0.7)
        kid = _Blob(
            side * U(0.27, 0.33),
            U(0.32, 0.38),
            U(0.075, 0.095),
            U(0.11, 0.135),
            rot,
            **shp(rng, 3, 0.05),
            z=(kz + dz, kz + dz + U(0.28, 0.34), kz + dz + U(0.6, 0.68)),
            dcx=side * 0.04,
        )
        # renal sinus / hilum notch on the antero-medial side
        ang = math.atan2(-0.6, -side * 0.8)
        hil = _Blob(
            kid.cx + 0.8 * kid.ax * math.cos(ang),
            kid.cy + 0.6 * kid.ay * math.sin(ang),
            0.5 * kid.ax,
            0.3 * kid.ay,
            rot,
            dcx=kid.dcx,
            z=(kid.z[1] - 0.5 * (kid.z[1] - kid.z[0]), kid.z[1], kid.z[1] + 0.5 * (kid.z[2] - kid.z[1])),
        )
        A["kidneys"].append((kid, hil))
    gz = U(0.42, 0.58)
    A["gallbladder"] = _Blob(
        U(-0.24, -0.12),
        U(-0.2, -0.08),
        U(0.05, 0.07),
        U(0.075, 0.11),
        U(-0.8, 0.2),
        **shp(rng, 3, 0.08),
        z=(gz - U(0.12, 0.17), gz, gz + U(0.1, 0.15)),
        dcx=-0.1,
        dcy=0.1,
        power=0.3,  # blunt ends: few tiny slivers
    )
    # liver lesions, positioned in the right-lobe frame (follow the liver)
    lesions = []
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        r = float(U(0.04, 0.08))
        hz = r * (CT_FOV_MM / 2) / CT_T_MM
        lo = A["liver_r"].z
        tc = float(U(lo[0] + 0.5 * (lo[1] - lo[0]), lo[1] + 0.6 * (lo[2] - lo[1])))
        ang, rad = U(0, 2 * np.pi), U(0.0, 0.55)
        lesions.append(
            {
                "u": rad * math.cos(ang),
                "v": rad * math.sin(ang),
                "r": r,
                "hz": hz,
                "tc": tc,
                "shape": shp(rng, 3, 0.1),
            }
        )
    A["lesions"] = lesions
    # vessel: cubic Bezier from the splenic hilum towards the liver hilum, drifting with t
    tv0 = U(0.25, 0.35)
    A["vessel"] = {
        "z": (tv0, tv0 + U(0.2, 0.3)),
        "p": np.array(
            [
                [U(0.36, 0.44), U(0.08, 0.16)],
                [U(0.15, 0.25), U(-0.1, 0.04)],
                [U(-0.05, 0.05), U(0.06, 0.18)],
                [U(-0.24, -0.16), U(-0.04, 0.06)],
            ],
            np.float32,
        ),
        "dp": rng.normal(0, 0.15, (4, 2)).astype(np.float32),
        "r": float(U(0.022, 0.029)),
    }
    A["stomach"] = _Blob(
        U(0.25, 0.35),
        U(-0.15, -0.05),
        U(0.18, 0.24),
        U(0.13, 0.18),
        U(-0.4, 0.4),
        **shp(rng, 4, 0.1),
        z=(-0.2, U(0.1, 0.2), U(0.45, 0.55)),
        dcx=-0.2,
        dcy=0.1,
    )
    A["gas_level"] = float(U(-0.35, 0.2))  # air-fluid level inside the stomach (fraction of its height)
    A["lungs"] = [
        _Blob(
            s * U(0.4, 0.5),
            U(0.35, 0.45),
            U(0.22, 0.3),
            U(0.2, 0.26),
            0.0,
            **shp(rng, 3, 0.08),
            z=(-0.4, -0.2, U(0.08, 0.16)),
        )
        for s in (-1, 1)
    ]
    A["vertebra_y"] = float(U(0.35, 0.41))
    A["aorta"] = (float(U(0.03, 0.08)), float(U(-0.17, -0.13)), float(U(0.055, 0.07)))  # x, dy to vb, r
    A["disc_phase"] = float(U(0, 1))
    A["rib_phase"] = rng.uniform(0, 1, 12)
    A["bias"] = rng.normal(0, 1, 7)
    A["noise"] = float(U(6, 14))
    A["psf"] = float(U(0.4, 0.7))
    liver = U(95, 120)
    cortex = U(170, 210)
    A["hu"] = {
        "fat": U(-110, -85),
        "muscle": U(45, 60),
        "liver": liver,
        "spleen": liver + U(-5, 15),
        "cortex": cortex,
        "medulla": cortex - U(30, 60),
        "sinus": U(-60, 10),
        "gb": U(0, 20),
        "lesion": liver - U(40, 60),
        "vessel": U(160, 200),
        "aorta": U(150, 200),
        "ivc": U(110, 140),
        "bone": U(500, 900),
        "spongy": U(180, 280),
        "csf": U(5, 20),
        "lung": U(-870, -800),
        "gas": U(-980, -900),
        "bowel": U(30, 60),
        "fluid": U(5, 20),
        "disc": U(70, 100),
        "mesentery": U(10, 40),
    }
    return A


def _render_ct(
    A: dict, t: np.ndarray, h: int, w: int, rng: np.random.Generator, z_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render HU and labels for levels t [D] at h x w. z_ratio = in-plane spacing / slice spacing."""
    d = len(t)
    t = t.astype(np.float32).reshape(d, 1, 1)
    gx, gy = _grid(h, w)
    fr = _Frame(h, w, A["shift"], A["rot"], A["zoom"])  # patient placement
    Y = fr.Y
    shape = (d, h, w)
    px = w / 128.0  # pixels per "128-px pixel": texture scales are physical
    sig = lambda s_: (s_ * px * z_ratio if d > 1 else 0.0, s_ * px, s_ * px)  # noqa: E731
    n_fine = _noise(rng, shape, sig(0.8))
    n_med = _noise(rng, shape, sig(2.0), factor=2)
    n_c1 = _noise(rng, shape, sig(5.0), factor=4)
    n_c2 = _noise(rng, shape, sig(3.0), factor=2)
    H = A["hu"]
    hu = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)

    def paint(m: np.ndarray, value: np.ndarray | float, label: int | None = None) -> None:
        hu[m] = value[m] if isinstance(value, np.ndarray) else value
        if label is not None:
            lab[m] = label

    # body wall
    body = A["body"]
    body_m = body.mask(fr, t)
    paint(body_m, H["fat"] + 8 * n_med)
    # uniform insets of the body outline (distance in units, per slice)
    depth = distance_transform_edt(body_m, sampling=(1e3, 2.0 / h, 2.0 / w)) / A["zoom"]
    paint(depth > A["fat"], H["muscle"] + 5 * n_fine)
    cav = depth > A["fat"] + A["muscle"]
    cav_in = depth > A["fat"] + A["muscle"] + 0.015
    # mesenteric fat with soft-tissue strands and bowel loops (more bowel caudally)
    paint(cav, H["fat"] + 6 * n_fine)
    paint(cav & (np.abs(n_c2) < 0.05), H["mesentery"] + 5 * n_fine)
    bowel = cav_in & (n_c1 > 1.3 - 1.2 * t) & (Y < 0.3)
    paint(bowel, H["bowel"] + 8 * n_fine)
    paint(bowel & (n_med > 2.0), H["gas"] + 20 * n_fine)
    # lungs at the top
    for lung in A["lungs"]:
        paint(lung.mask(fr, t) & cav, H["lung"] + 30 * n_med)
    # stomach with air-fluid level
    st = A["stomach"]
    st_m = st.mask(fr, t) & cav_in
    paint(st_m, H["bowel"] + 5 * n_fine)
    st_lumen = st.mask(fr, t, grow=-0.025) & cav_in
    _, scy = st.center(t)
    paint(st_lumen, H["fluid"] + 3 * n_fine)
    paint(st_lumen & (Y < scy + A["gas_level"] * st.ay * st.scale(t)), H["gas"] + 15 * n_fine)

    # --- labelled organs (painted in label-priority order) ---
    liver_r = A["liver_r"]
    liver_m = (liver_r.mask(fr, t) | A["liver_l"].mask(fr, t)) & cav_in
    paint(liver_m, H["liver"] + 5 * n_fine + 4 * n_med, 1)
    paint(A["spleen"].mask(fr, t) & cav_in, H["spleen"] + 4 * n_fine + 5 * n_c2, 2)
    for kid, hil in A["kidneys"]:
        lev = kid.level(fr, t)
        ks = kid.scale(t)
        km = (lev < ks) & ~hil.mask(fr, t) & cav_in
        val = np.where(lev < 0.68 * ks, H["medulla"] + 10 * n_med, H["cortex"]) + 6 * n_fine
        paint(km, val, 3)
        paint(hil.mask(fr, t, grow=-0.01) & cav_in & ~km, H["sinus"] + 10 * n_fine)
    paint(A["gallbladder"].mask(fr, t) & cav_in, H["gb"] + 2 * n_fine, 4)
    lcx, lcy = liver_r.center(t)
    ls = liver_r.scale(t)
    cr, sr = math.cos(liver_r.rot), math.sin(liver_r.rot)
    for les in A["lesions"]:
        du, dv = les["u"] * liver_r.ax * ls, les["v"] * liver_r.ay * ls
        b = _Blob(
            0.0,
            0.0,
            les["r"],
            les["r"],
            0.0,
            **les["shape"],
            z=(les["tc"] - les["hz"], les["tc"], les["tc"] + les["hz"]),
        )
        lev = b.level(fr, t, center=(lcx + cr * du - sr * dv, lcy + sr * du + cr * dv))
        sc = b.scale(t)
        m = (lev < sc) & liver_m
        paint(m, H["lesion"] + 8 * n_med + 6 * n_fine + 15 * lev / np.maximum(sc, 1e-3), 5)

    # --- unlabelled fixed anatomy (overrides organ labels) ---
    vy = A["vertebra_y"]
    vb = _Blob(0.0, vy, 0.12, 0.105)
    disc = np.cos(2 * np.pi * (t * CT_T_MM / 32.0 + A["disc_phase"])) > 0.75
    vb_m = vb.mask(fr, t)
    paint(vb_m, H["bone"] + 30 * n_fine, 0)
    paint(vb.mask(fr, t, grow=-0.02), np.where(disc, H["disc"], H["spongy"]) + 25 * n_fine)
    for sx in (-1, 1):  # paraspinal and psoas muscles
        paint(_Blob(sx * 0.16, vy + 0.2, 0.1, 0.09).mask(fr, t) & cav, H["muscle"] + 5 * n_fine, 0)
        psoas = _Blob(sx * 0.13, vy - 0.01, 0.065, 0.06, z=(0.45, 1.2, 1.6), power=0.7)
        paint(psoas.mask(fr, t) & cav_in, H["muscle"] + 5 * n_fine, 0)
    post = (
        _Blob(0.0, vy + 0.15, 0.075, 0.065).mask(fr, t)
        | _Blob(0.0, vy + 0.26, 0.025, 0.07).mask(fr, t)
        | (_Blob(0.0, vy + 0.12, 0.2, 0.03).mask(fr, t) & ~disc)
    )
    paint(post, H["bone"] + 30 * n_fine, 0)
    paint(_Blob(0.0, vy + 0.155, 0.045, 0.04).mask(fr, t), H["csf"] + 5 * n_fine, 0)
    ax_, ady, ar = A["aorta"]
    paint(_Blob(ax_, vy + ady - ar, ar, ar).mask(fr, t), H["aorta"] + 5 * n_fine, 0)
    paint(_Blob(-0.13, vy - 0.17, 0.065, 0.045, 0.3).mask(fr, t) & cav, H["ivc"] + 5 * n_fine, 0)

    # --- thin vessel (label 6) ---
    V = A["vessel"]
    t0, t1 = V["z"]
    tf = t.reshape(d)
    frac = np.clip(np.minimum(tf - t0, t1 - tf) / 0.06, 0.0, 1.0)
    present = (tf > t0) & (tf < t1)
    if present.any():
        half = 0.5 * (0.3 + 0.7 * frac[present])
        u = 0.5 + half[:, None] * np.linspace(-1, 1, 17, dtype=np.float32)[None, :]
        tm = ((tf[present] - 0.5 * (t0 + t1)) / max(t1 - t0, 1e-6))[:, None, None]
        ctrl = V["p"][None] + V["dp"][None] * tm
        dist = _polyline_distance(fr, _bezier(ctrl, u), 2 * V["r"])
        vm = np.zeros(shape, bool)
        vm[present] = dist < V["r"]
        vm &= cav_in
        paint(vm, H["vessel"] + 5 * n_fine, 6)

    # ribs (upper abdomen), just inside the body wall
    for j, ph in enumerate(A["rib_phase"]):
        side = -1 if j % 2 else 1
        ang = math.radians(-55 + 22 * (j // 2))  # from antero-lateral to postero-lateral
        rx = side * (body.ax - A["fat"] - 0.02) * math.cos(ang) * 0.97
        ry = body.cy + (body.ay - A["fat"] - 0.02) * math.sin(ang) * 0.97
        on = (np.cos(2 * np.pi * (tf * 3.5 + ph)) > 0.1) & (tf < 0.65)
        if not on.any():
            continue
        rib = _Blob(rx, ry, 0.022, 0.035, -side * ang)
        m = rib.mask(fr, t) & on[:, None, None] & body_m
        paint(m, H["bone"] * 0.8 + 30 * n_fine, 0)

    # bias field (smooth, multiplicative on attenuation + additive), PSF blur, correlated noise
    b = A["bias"]
    poly = b[0] * gx + b[1] * gy + 0.5 * b[2] * gx * gy + 0.5 * b[3] * gx * gx + 0.5 * b[4] * gy * gy
    poly = poly + 0.3 * b[5] * (t - 0.5)
    inside = hu > -950
    hu = np.where(inside, (hu + 1000) * (1 + 0.008 * poly) - 1000 + 6 * poly * b[6] / 2, hu)
    hu = gaussian_filter(hu, (0.0, A["psf"] * px, A["psf"] * px))
    noise = _noise(rng, shape, (0.0, 0.6, 0.6)) * A["noise"]
    hu = (hu + noise).astype(np.float32)
    return hu, lab


def phantom_ct_slice(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One 2D axial slice of a random patient at a random level.

    Returns ``(hu float32 [H,W], labels uint8 [H,W])`` with labels indexing :data:`PHANTOM_CT_CLASSES`.
    """
    A = _sample_ct_anatomy(rng)
    t = float(rng.uniform(0.03, 0.92))
    # make lesions visible in about half of the slices where the liver is big enough
    if A["lesions"] and _profile(np.array(t), *A["liver_r"].z) > 0.5 and rng.random() < 0.5:
        les = A["lesions"][0]
        les["tc"] = t + float(rng.uniform(-0.5, 0.5)) * les["hz"]
    hu, lab = _render_ct(A, np.array([t]), size, size, rng, z_ratio=1.0)
    return hu[0], lab[0]


def phantom_ct_volume(
    rng: np.random.Generator, shape: tuple[int, int, int] = (VOLUME_DEPTH, VOLUME_MAX_SIZE, VOLUME_MAX_SIZE)
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One 3D volume of a random patient: coherent axial slices, index 0 = most caudal (feet side).

    Returns ``(hu float32 [D,H,W], labels uint8 [D,H,W], spacing)`` with spacing in mm in array
    axis order ``(z, y, x)``.
    """
    d, h, w = shape
    A = _sample_ct_anatomy(rng)
    sxy = CT_FOV_MM / w
    cover = (d - 1) * CT_SLICE_MM / CT_T_MM
    mid = float(rng.uniform(0.45, 0.55))
    t = mid + np.linspace(cover / 2, -cover / 2, d)  # k increases towards the head
    hu, lab = _render_ct(A, t, h, w, rng, z_ratio=sxy / CT_SLICE_MM)
    return hu, lab, (CT_SLICE_MM, CT_FOV_MM / h, sxy)


# --------------------------------------------------------------------------------------------------
# phantom-endo
# --------------------------------------------------------------------------------------------------
def phantom_endo_image(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One endoscopy-like RGB frame with a polyp. Returns ``(rgb uint8 [H,W,3], mask bool [H,W])``."""
    U = rng.uniform
    fr = _Frame(size, size)
    X, Y = fr.X[0], fr.Y[0]
    pxu = 2.0 / size  # units per pixel
    sp = size / 128.0
    shape = (size, size)
    # circular field of view (black corners), sometimes full frame
    fov_r = U(1.0, 1.25) if rng.random() < 0.75 else 2.0
    rr = np.sqrt(X * X + Y * Y)
    fov = np.clip((fov_r - rr) / (1.5 * pxu), 0, 1)
    # lumen and haustral folds (height map)
    lx, ly = U(-0.6, 0.6, 2)
    warp = _noise(rng, shape, (10 * sp, 10 * sp)) * U(0.06, 0.15)
    dl = np.sqrt((X - lx) ** 2 + (Y - ly) ** 2)
    nf = U(1.4, 2.8)
    folds = (0.5 + 0.5 * np.cos(2 * np.pi * nf * (dl + warp) + U(0, 2 * np.pi))) ** 3
    h = 0.35 * dl + U(0.03, 0.06) * folds * np.clip(dl / 0.25, 0, 1)
    h = h + 0.02 * _noise(rng, shape, (8 * sp, 8 * sp))
    # polyp: Fourier-perturbed blob with a dome-shaped height
    area = float(np.exp(U(np.log(0.012), np.log(0.28))))
    aspect = U(0.75, 1.3)
    rad = math.sqrt(area * 4 / math.pi)
    lim = max(0.0, min(fov_r, 1.0) * 0.95 - rad)
    ang = U(0, 2 * np.pi)
    cr = lim * math.sqrt(U(0, 1))
    polyp = _Blob(
        cr * math.cos(ang),
        cr * math.sin(ang),
        rad * math.sqrt(aspect),
        rad / math.sqrt(aspect),
        U(0, np.pi),
        **_Blob.random_shape(rng, 4, 0.16),
    )
    lev = polyp.level(fr, np.zeros((1, 1, 1), np.float32))[0]
    mask = (lev < 1.0) & (fov > 0.5)
    lobes = 1 + 0.12 * _noise(rng, shape, (4 * sp, 4 * sp))
    dome = np.sqrt(np.clip(1 - lev * lev, 0, 1)) * U(0.35, 0.7) * rad * lobes
    h = h + dome
    h_spec = h + 0.0025 * _noise(rng, shape, (1.5 * sp, 1.5 * sp))
    # albedo: mucosa colour with a vascular network; polyp redder/paler with pit texture
    base = np.array([U(0.78, 0.9), U(0.38, 0.5), U(0.28, 0.38)], np.float32)
    vessels = np.abs(_noise(rng, shape, (2.5 * sp, 2.5 * sp))) < 0.07
    albedo = np.broadcast_to(base, (size, size, 3)).copy()
    albedo *= (1 + 0.05 * _noise(rng, shape, (3 * sp, 3 * sp)))[..., None]
    albedo[vessels] *= np.array([0.92, 0.7, 0.75], np.float32)
    tint = np.array([U(-0.02, 0.08), U(-0.16, -0.06), U(-0.12, -0.02)], np.float32)
    if rng.random() < 0.3:  # pale polyp
        tint = np.array([U(0.02, 0.08), U(0.05, 0.12), U(0.04, 0.1)], np.float32)
    wgt = np.clip((1 - lev) / 0.1, 0, 1)[..., None]
    pit = 0.06 * _noise(rng, shape, (0.8 * sp, 0.8 * sp))[..., None]
    albedo = albedo + wgt * (tint + pit * albedo)
    # lighting from the scope tip: diffuse + specular (Blinn-Phong), depth falloff, vignetting
    gyh, gxh = np.gradient(h, pxu)
    nrm = np.sqrt(gxh * gxh + gyh * gyh + 1)
    lvec = np.array([U(-0.2, 0.2), U(-0.2, 0.2), 1.0])
    lvec /= np.linalg.norm(lvec)
    diffuse = np.clip((-gxh * lvec[0] - gyh * lvec[1] + lvec[2]) / nrm, 0, 1)
    gys, gxs = np.gradient(h_spec, pxu)
    hv = lvec + np.array([0, 0, 1.0])
    hv /= np.linalg.norm(hv)
    spec = np.clip((-gxs * hv[0] - gys * hv[1] + hv[2]) / np.sqrt(gxs**2 + gys**2 + 1), 0, 1) ** U(150, 400)
    depth = 1 - U(0.75, 0.95) * np.exp(-((dl / U(0.12, 0.22)) ** 2)) * (1 - 0.8 * wgt[..., 0])
    vign = 1 - U(0.2, 0.45) * (X * X + Y * Y) / 2
    light = (0.3 + 0.8 * diffuse) * depth * vign
    rgb = albedo * light[..., None] + U(0.6, 1.0) * spec[..., None]
    # optics: blur, sensor noise, fov mask
    blur = U(0.5, 1.2) * sp
    rgb = gaussian_filter(rgb, (blur, blur, 0))
    rgb = rgb + rng.normal(0, U(0.005, 0.015), rgb.shape)
    rgb = rgb * fov[..., None]
    img = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return img, mask


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def _split_counts(n: int) -> tuple[int, int, int]:
    """Train/val/test sizes for n cases (70/15/15; val/test get >= 1 case when n >= 3)."""
    if n < 3:
        return n, 0, 0
    n_val = max(1, int(n * SPLIT_FRACTIONS[1] + 0.5))
    n_test = max(1, int(n * SPLIT_FRACTIONS[2] + 0.5))
    return n - n_val - n_test, n_val, n_test


def _make_splits(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    n_tr, n_va, _ = _split_counts(len(ids))
    perm = [ids[i] for i in rng.permutation(len(ids))]
    return {
        "train": sorted(perm[:n_tr]),
        "val": sorted(perm[n_tr : n_tr + n_va]),
        "test": sorted(perm[n_tr + n_va :]),
    }


def _write_splits(folder: Path, splits: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in splits.items():
        (folder / f"{k}.txt").write_text("".join(f"{i}\n" for i in v))


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def _save_nifti(arr_dhw: np.ndarray, spacing_zyx: tuple[float, float, float], path: Path) -> None:
    """Write [D,H,W] (caudal first) as NIfTI voxels (x=W, y=H, z=D), L-P-S orientation."""
    import nibabel as nib

    data = np.ascontiguousarray(arr_dhw.transpose(2, 1, 0))
    sz, sy, sx = spacing_zyx
    nx, ny, nz = data.shape
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [sx * (nx - 1) / 2, sy * (ny - 1) / 2, -sz * (nz - 1) / 2]  # centred at the origin
    img = nib.Nifti1Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def _case_rng(seed: int, stream: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[stream], i])


def _write_ct(root: Path, seed: int, count: int, size: int, volumes: int, bar: Any) -> None:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    width = max(4, len(str(count - 1)))
    ids = []
    for i in range(count):
        cid = f"ct_{i:0{width}d}"
        hu, lab = phantom_ct_slice(_case_rng(seed, "phantom-ct", i), size)
        _save_png(window_ct(hu), root / "images" / f"{cid}.png")
        _save_png(lab, root / "masks" / f"{cid}.png")
        ids.append(cid)
        bar.advance()
    _write_splits(root / "splits", _make_splits(ids, np.random.default_rng([seed, 10])))
    if volumes <= 0:
        return
    vroot = root / "volumes"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (vroot / sub).mkdir(parents=True)
    vids = [f"phantom_{i:03d}" for i in range(volumes)]
    vsplits = _make_splits(vids, np.random.default_rng([seed, 11]))
    test = set(vsplits["test"])
    vs = min(size, VOLUME_MAX_SIZE)
    for i, vid in enumerate(vids):
        hu, lab, spacing = phantom_ct_volume(_case_rng(seed, "phantom-ct-volume", i), (VOLUME_DEPTH, vs, vs))
        img_dir, lab_dir = ("imagesTs", "labelsTs") if vid in test else ("imagesTr", "labelsTr")
        hu16 = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        _save_nifti(hu16, spacing, vroot / img_dir / f"{vid}_0000.nii.gz")
        _save_nifti(lab, spacing, vroot / lab_dir / f"{vid}.nii.gz")
        bar.advance()
    _write_splits(vroot / "splits", vsplits)
    ds = {
        "name": "PhantomCT",
        "description": "medseg built-in synthetic abdominal CT phantom (HU, int16)",
        "reference": "medseg.data.builtin",
        "licence": "CC0",
        "channel_names": {"0": "CT"},
        "labels": {name: i for i, name in enumerate(PHANTOM_CT_CLASSES)},
        "numTraining": len(vids) - len(test),
        "numTest": len(test),
        "file_ending": ".nii.gz",
    }
    (vroot / "dataset.json").write_text(json.dumps(ds, indent=2) + "\n")


def _write_endo(root: Path, seed: int, count: int, size: int, bar: Any) -> None:
    (root / "images").mkdir()
    (root / "masks").mkdir()
    width = max(4, len(str(count - 1)))
    ids = []
    for i in range(count):
        cid = f"endo_{i:0{width}d}"
        rgb, mask = phantom_endo_image(_case_rng(seed, "phantom-endo", i), size)
        _save_png(rgb, root / "images" / f"{cid}.png")
        _save_png(mask.astype(np.uint8) * 255, root / "masks" / f"{cid}.png")
        ids.append(cid)
        bar.advance()
    _write_splits(root / "splits", _make_splits(ids, np.random.default_rng([seed, 12])))


def _read_params(root: Path) -> dict | None:
    try:
        if not (root / ".complete").is_file():
            return None
        return json.loads((root / "builtin.json").read_text())
    except (OSError, ValueError):
        return None


#: One line per file a generation wrote (relative, ``/``-separated); regenerating removes only these.
MANIFEST = "builtin-files.txt"
_OWN = ("builtin.json", ".complete", MANIFEST)


def _write_manifest(folder: Path) -> None:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    (folder / MANIFEST).write_text("".join(f"{f}\n" for f in [*files, MANIFEST] if f != ".complete"))


def _own_files(root: Path, name: str) -> list[str]:
    """The files of an earlier generation of ``name`` in ``root`` (all of its files), else a DataError.

    ``root`` must be an empty folder, or hold a generation of the same data set whose manifest lists
    every file in it: files the user added are never deleted.
    """
    if not root.exists():
        return []
    if not root.is_dir():
        raise DataError(f"{root}: exists and is a file; choose another folder")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*")}
    if not present:
        return []
    try:
        listed = set(os.fsdecode((root / MANIFEST).read_bytes()).splitlines())
        earlier = json.loads((root / "builtin.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        raise DataError(f"{root}: not empty and not a medseg built-in data set (no {MANIFEST}); "
                        "refusing to overwrite it: choose another folder") from None
    if earlier != name:
        raise DataError(f"{root}: holds built-in data set {earlier!r}, not {name!r}; choose another folder")
    folders = {parent.as_posix() for f in listed for parent in PurePosixPath(f).parents} - {"."}
    foreign = sorted(present - listed - folders - set(_OWN))
    if foreign:
        raise DataError(f"{root}: holds {len(foreign)} file(s) medseg did not write (e.g. {foreign[0]}); "
                        "refusing to regenerate over them: move them or choose another folder")
    return sorted(present - folders)


def _remove_own(root: Path, files: list[str]) -> None:
    """Delete ``files`` (relative to ``root``), then the folders left empty, ``root`` included."""
    for f in files:
        (root / f).unlink(missing_ok=True)
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()  # a file added meanwhile makes this fail rather than be deleted
    root.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _cleanup_stale_tmp(root: Path) -> None:
    """Remove ``DIR.tmp-<pid>`` left behind by interrupted generations of dead processes."""
    for p in root.parent.glob(root.name + ".tmp-*"):
        suffix = p.name.rsplit(".tmp-", 1)[-1]
        if suffix.isdigit() and int(suffix) != os.getpid() and not _pid_alive(int(suffix)):
            shutil.rmtree(p, ignore_errors=True)


def generate(
    name: str,
    out: str | Path,
    seed: int = 0,
    count: int | None = None,
    size: int = 128,
    volumes: int | None = None,
) -> Path:
    """Generate built-in dataset ``name`` into directory ``out`` (cached) and return it.

    ``count``: number of 2D cases (default 240 for phantom-ct, 200 for phantom-endo).
    ``volumes``: number of 3D phantom-ct volumes (default 10; 0 = none; only for phantom-ct).
    An existing ``out`` whose ``builtin.json`` matches the parameters and which carries the
    ``.complete`` marker is returned untouched; otherwise it is regenerated, removing only the files
    its manifest (:data:`MANIFEST`) lists.  A non-empty ``out`` holding any other file, or another
    built-in data set, is refused (:class:`DataError`), never overwritten.  Invalid arguments (unknown ``name``
    included) raise :class:`medseg.utils.DataError`, a ``ValueError``.
    """
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown built-in dataset {name!r}; valid names: {', '.join(BUILTIN_DATASETS)}")
    seed = int(seed)
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    count = DEFAULT_COUNTS[name] if count is None else int(count)
    if count < 1:
        raise DataError(f"count must be >= 1, got {count}")
    size = int(size)
    if size < 16:
        raise DataError(f"size must be >= 16, got {size}")
    if name == "phantom-ct":
        volumes = DEFAULT_VOLUMES if volumes is None else int(volumes)
        if volumes < 0:
            raise DataError(f"volumes must be >= 0, got {volumes}")
    elif volumes:
        raise DataError(f"{name} has no volumes (volumes={volumes})")
    else:
        volumes = 0
    params = {
        "name": name,
        "seed": seed,
        "count": count,
        "size": size,
        "volumes": volumes,
        "version": BUILTIN_VERSION,
    }
    if volumes:
        vs = min(size, VOLUME_MAX_SIZE)
        params["volume_shape"] = [VOLUME_DEPTH, vs, vs]
    if name == "phantom-ct":  # how raw inputs map to the PNGs (a run records it: medseg.data.inputs)
        level, width = CT_WINDOW
        params["inputs"] = {"nifti": {"kind": "window", "window": [level - width / 2, level + width / 2]}}

    root = Path(out).expanduser().absolute()
    if _read_params(root) == params:
        logger.debug("built-in dataset %s is up to date at %s", name, root)
        return root
    _own_files(root, name)  # refuses before any work when the folder holds files it did not write
    check_output_dir(root.parent)
    _cleanup_stale_tmp(root)

    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    logger.info(
        "generating built-in dataset %s (seed=%d, count=%d, size=%d, volumes=%d) in %s",
        name,
        seed,
        count,
        size,
        volumes,
        root,
    )
    try:
        from medseg.progress import progress_bar

        with progress_bar(f"generate {name}", total=count + volumes) as bar:
            if name == "phantom-ct":
                _write_ct(tmp, seed, count, size, volumes, bar)
            else:
                _write_endo(tmp, seed, count, size, bar)
        (tmp / "builtin.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        _write_manifest(tmp)
        (tmp / ".complete").write_text("")
        if _read_params(root) == params:  # another process finished the same data meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        if root.exists():
            _remove_own(root, _own_files(root, name))
        try:
            tmp.rename(root)
        except OSError:
            # another process finished first: keep its result if it matches
            if _read_params(root) != params:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("generated %s in %.1f s", root, time.perf_counter() - t0)
    return root


__all__ = [
    "BUILTIN_DATASETS",
    "CT_WINDOW",
    "PHANTOM_CT_CLASSES",
    "generate",
    "phantom_ct_slice",
    "phantom_ct_volume",
    "phantom_endo_image",
    "window_ct",
]
