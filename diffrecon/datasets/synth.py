"""Synthetic T1-like head volumes from the MNI152 tissue maps (SynthSeg-style generative model).

The only real head data that loads offline besides the held-out Colin27 sample is the MNI152 2009a
template shipped by nilearn: a skull-stripped T1 plus grey-matter (GM), white-matter (WM) and brain-mask
maps. A prior trained on that alone never sees scalp, skull or face, and sees a single anatomy. This
module multiplies the data by *generating* heads:

* **labels**: partial-volume maps for WM, GM, CSF (= brain mask − GM − WM, plus an extra-cerebral
  CSF shell), skull (outer/inner tables and marrow), scalp fat, muscle/skin and a lower-head region
  (face/neck soft tissue) — the extra-cerebral shells are built from a distance map to the brain
  mask whose thickness is modulated by a smooth random field;
* **intensities**: per-label random means (T1-like ordering most of the time, any ordering with
  probability ``p_random_contrast``), smooth within-label texture, or (with probability
  ``p_real_brain``) the real MNI152 T1 intensities inside the brain;
* **geometry**: random affine (rotation, anisotropic scale, shear, translation) and a smooth elastic
  displacement, applied once by trilinear interpolation;
* **acquisition**: multiplicative bias field, Gaussian blur (resolution change), Rician-like noise,
  random gamma; then the same framing as the sample volume (:func:`frame_head`).

All randomness comes from a ``numpy.random.Generator`` so a seed reproduces a volume exactly.
Units: millimetres for thicknesses and displacements, intensities relative (the result is in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .framing import frame_head, normalise_intensity


@dataclass
class TissueMaps:
    """MNI152 maps on a common padded grid (float32 arrays, same shape) and the grid's affine."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    spacing: float


def load_mni_maps(resolution: int = 2, pad_mm: float = 30.0) -> TissueMaps:
    """Load nilearn's MNI152 T1 / GM / WM / brain mask at ``resolution`` mm and pad by ``pad_mm``.

    Needs the optional ``nilearn`` package (extra ``data``); nothing is downloaded.
    """
    from ..errors import require

    datasets = require("nilearn.datasets", "data")
    import nibabel as nib

    imgs = [
        datasets.load_mni152_template(resolution=resolution),
        datasets.load_mni152_gm_template(resolution=resolution),
        datasets.load_mni152_wm_template(resolution=resolution),
        datasets.load_mni152_brain_mask(resolution=resolution),
    ]
    imgs = [nib.as_closest_canonical(i) for i in imgs]
    arrs = [np.asarray(i.get_fdata(), dtype=np.float32) for i in imgs]
    aff = imgs[0].affine.copy()
    sp = float(abs(aff[0, 0]))
    p = int(round(pad_mm / sp))
    arrs = [np.pad(a, p) for a in arrs]
    aff[:3, 3] -= aff[:3, :3] @ np.full(3, p)
    t1, gm, wm, mask = arrs
    mask = np.maximum(mask, (gm + wm) > 0.05).astype(np.float32)
    return TissueMaps(t1=t1 / max(float(t1.max()), 1e-6), gm=gm, wm=wm, mask=mask, affine=aff, spacing=sp)


def _smooth_field(rng: np.random.Generator, shape, coarse: int, amp: float) -> np.ndarray:
    """Smooth random field: N(0, amp²) noise on a ``coarse``³ grid, trilinearly upsampled to ``shape``."""
    import torch
    import torch.nn.functional as F

    g = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)).astype(np.float32))
    f = F.interpolate(g, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)
    return (amp * f[0, 0].numpy()).astype(np.float32)


# T1-weighted mean intensity ranges (relative to WM ≈ 1) for each generated label.
T1_RANGES = {
    "wm": (0.85, 1.05),
    "gm": (0.50, 0.78),
    "csf": (0.05, 0.30),
    "skull": (0.02, 0.20),
    "marrow": (0.35, 0.90),
    "fat": (0.85, 1.45),
    "muscle": (0.35, 0.75),
    "lower": (0.30, 0.95),
}


@dataclass
class SynthConfig:
    """Ranges of the generative model (see the module docstring)."""

    p_real_brain: float = 0.35
    p_random_contrast: float = 0.1
    rot_deg: float = 12.0
    scale: tuple[float, float] = (0.88, 1.12)
    shear: float = 0.06
    shift_mm: float = 6.0
    elastic_mm: float = 4.0
    bias: float = 0.25
    blur_vox: tuple[float, float] = (0.0, 0.9)
    noise: tuple[float, float] = (0.0, 0.025)
    log_gamma: float = 0.2
    p_lower_head: float = 0.85
    margin_mm: tuple[float, float] = (2.0, 26.0)


def synth_head(
    maps: TissueMaps, rng: np.random.Generator, cfg: SynthConfig | None = None, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one framed (size³, float32 in [0, 1]) synthetic T1-like head and its affine."""
    cfg = cfg or SynthConfig()
    sp = maps.spacing
    shape = maps.mask.shape
    brain = maps.mask > 0.5
    # --- extra-cerebral shells from the distance (mm) to the brain, thickness jittered ----------
    dist = ndimage.distance_transform_edt(~brain).astype(np.float32) * sp
    dist = dist + _smooth_field(rng, shape, 5, 1.5)
    t_csf = rng.uniform(1.0, 4.5)
    t_skull = rng.uniform(4.0, 9.0)
    t_scalp = rng.uniform(4.0, 11.0)
    e1, e2, e3 = t_csf, t_csf + t_skull, t_csf + t_skull + t_scalp
    soft = 0.6  # mm, edge softness of the shells

    def band(a, b):
        z1 = np.clip(-(dist - a) / soft, -50, 50)
        z2 = np.clip((dist - b) / soft, -50, 50)
        return (1 / (1 + np.exp(z1))) * (1 / (1 + np.exp(z2)))

    outside = 1.0 - maps.mask
    csf_shell = band(-1e3, e1) * outside
    skull = band(e1, e2) * outside
    # marrow: the middle of the skull band, random fraction
    mfrac = rng.uniform(0.2, 0.6)
    m0 = e1 + t_skull * (0.5 - mfrac / 2)
    marrow = band(m0, m0 + t_skull * mfrac) * outside
    skull = np.clip(skull - marrow, 0, 1)
    scalp = band(e2, e3) * outside
    fat_frac = rng.uniform(0.3, 0.8)
    fat = band(e2 + t_scalp * (1 - fat_frac) * 0.5, e3 - t_scalp * (1 - fat_frac) * 0.5) * outside
    muscle = np.clip(scalp - fat, 0, 1)
    # --- lower head (face / neck): soft tissue below the brain's lower third ----------------------
    lower = np.zeros(shape, np.float32)
    if rng.random() < cfg.p_lower_head:
        zz = np.nonzero(brain.any(axis=(0, 1)))[0]
        z_lo, z_hi = zz.min(), zz.max()
        z_cut = z_lo + rng.uniform(0.25, 0.45) * (z_hi - z_lo)
        # footprint: the head's axial cross-section near z_cut, dilated, extruded downwards
        foot = dist[:, :, int(z_cut)] < e3 + rng.uniform(-4, 4)
        foot = ndimage.binary_erosion(foot, iterations=int(rng.integers(0, 4))) if foot.any() else foot
        z = np.arange(shape[2])[None, None, :]
        taper = np.clip((z_cut - z) / max(z_cut - z_lo + rng.uniform(10, 40), 1), 0, 1)
        region = foot[:, :, None] & (z < z_cut)
        shrink = _smooth_field(rng, shape, 4, 1.0) - 2.0 * taper  # shrink towards the neck
        region &= shrink > -1.8
        lower = ndimage.gaussian_filter(region.astype(np.float32), 0.8) * (1 - maps.mask)
        lower = np.clip(lower - csf_shell - skull - marrow - scalp, 0, 1)
    # --- intensities -----------------------------------------------------------------------------
    ranges = dict(T1_RANGES)
    if rng.random() < cfg.p_random_contrast:
        ranges = {k: (0.0, 1.0) for k in ranges}
    mu = {k: rng.uniform(*v) for k, v in ranges.items()}
    csf_in = np.clip(maps.mask - maps.gm - maps.wm, 0, 1)

    def tex(amp):
        return 1.0 + _smooth_field(rng, shape, int(rng.integers(6, 16)), amp)

    if rng.random() < cfg.p_real_brain:
        scale_wm = mu["wm"] / max(float(np.percentile(maps.t1[maps.wm > 0.9], 50)), 1e-3)
        brain_img = maps.t1 * scale_wm * maps.mask
    else:
        brain_img = maps.wm * mu["wm"] * tex(0.03) + maps.gm * mu["gm"] * tex(0.05) + csf_in * mu["csf"]
    img = (
        brain_img
        + csf_shell * mu["csf"]
        + skull * mu["skull"]
        + marrow * mu["marrow"] * tex(0.15)
        + fat * mu["fat"] * tex(0.08)
        + muscle * mu["muscle"] * tex(0.1)
        + lower * mu["lower"] * tex(0.3)
    )
    # lower-head texture: mix of fat-like and muscle-like patches
    if lower.any():
        patches = _smooth_field(rng, shape, 12, 1.0) > rng.uniform(-0.5, 0.8)
        img = img + lower * patches * (mu["fat"] - mu["lower"]) * rng.uniform(0.3, 1.0)
    img = np.clip(img, 0, None).astype(np.float32)
    # --- geometry: random affine + elastic, one trilinear resampling -------------------------------
    ang = np.deg2rad(rng.uniform(-cfg.rot_deg, cfg.rot_deg, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    sh = np.eye(3) + rng.uniform(-cfg.shear, cfg.shear, (3, 3)) * (1 - np.eye(3))
    m = rx @ ry @ rz @ sh @ np.diag(1.0 / rng.uniform(*cfg.scale, 3))
    c = (np.array(shape) - 1) / 2.0
    shift = rng.uniform(-cfg.shift_mm, cfg.shift_mm, 3) / sp
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    coords = np.einsum(
        "ij,jxyz->ixyz", m.astype(np.float32), grid - c[:, None, None, None].astype(np.float32)
    )
    coords += (c + shift)[:, None, None, None].astype(np.float32)
    amp = rng.uniform(0, cfg.elastic_mm) / sp
    for i in range(3):
        coords[i] += _smooth_field(rng, shape, int(rng.integers(4, 8)), amp / 2)
    img = ndimage.map_coordinates(img, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    # --- acquisition -------------------------------------------------------------------------------
    img *= np.exp(_smooth_field(rng, shape, 3, rng.uniform(0, cfg.bias)))
    b = rng.uniform(*cfg.blur_vox)
    if b > 0.05:
        img = ndimage.gaussian_filter(img, b)
    img = normalise_intensity(img)
    framed, aff = frame_head(
        img, maps.affine, size=size, normalise=True, margin_mm=rng.uniform(*cfg.margin_mm)
    )
    s = rng.uniform(*cfg.noise)
    if s > 0:
        n1 = rng.standard_normal(framed.shape).astype(np.float32) * s
        n2 = rng.standard_normal(framed.shape).astype(np.float32) * s
        framed = np.sqrt((framed + n1) ** 2 + n2**2)
    g = float(np.exp(rng.normal(0, cfg.log_gamma)))
    framed = normalise_intensity(np.clip(framed, 0, None) ** g)
    if rng.random() < 0.5:
        framed = framed[::-1].copy()  # left-right flip (axis 0 is R-L in RAS)
    return framed.astype(np.float32), aff


def real_mni_heads(size: int = 64) -> list[np.ndarray]:
    """The two real (skull-stripped) MNI152 T1 templates (1 mm and 2 mm), framed like the sample."""
    from ..errors import require

    datasets = require("nilearn.datasets", "data")
    import nibabel as nib

    out = []
    for r in (1, 2):
        img = nib.as_closest_canonical(datasets.load_mni152_template(resolution=r))
        v, _ = frame_head(np.asarray(img.get_fdata(), dtype=np.float32), img.affine, size=size)
        out.append(v)
    return out


# The bundled priors' slice banks draw shard k from default_rng([0, k]) (datasets/bank.py, --seed 0), so
# generator seeds [seed, 0] with seed >= 1 give heads no bundled prior was trained on.
TUNING_SEED = 1


def tuning_volume(seed: int = TUNING_SEED, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic head for tuning solver weights: neither the held-out sample (Colin27, the demo's and
    the benchmarks' evaluation volume) nor a volume of the bundled priors' training banks.

    It is the first head of generator ``default_rng([seed, 0])`` with the default :class:`SynthConfig`;
    ``seed`` 0 is the training bank's, so it is refused. Needs ``nilearn`` (extra ``data``).

    Returns:
        ``(volume, affine)``: float32 ``(size, size, size)`` in [0, 1], RAS axes like the sample volume
        (axial slices ``volume[:, :, k]``), and the (4, 4) voxel → millimetre affine.
    """
    from ..errors import InputDataError

    if int(seed) < 1:
        raise InputDataError(f"tuning_volume: seed {seed} is the training bank's; use a seed >= 1")
    return synth_head(load_mni_maps(), np.random.default_rng([int(seed), 0]), size=size)
