"""Head framing shared by the bundled sample volume and the prior's training data.

Every head volume that meets a bundled prior goes through the same three steps, so the slice
statistics a prior is trained on match the slices it is evaluated on:

1. **crop** to the bounding box of the head (voxels brighter than ``threshold`` × the 99.9th
   intensity percentile, after a light smoothing so isolated noise does not widen the box);
2. **pad** the box symmetrically to a cube (in millimetres) with ``margin_mm`` on the longest side;
3. **resample** the cube to ``size``³ voxels (trilinear, with a Gaussian anti-alias filter of
   σ = 0.4·(output spacing / input spacing) input voxels), and scale intensities so the 99.9th
   percentile maps to 1, clipping to [0, 1].

With the 1 mm Colin27 head (≈ 180 × 217 × 181 mm) and ``size=64`` the output spacing is ≈ 3.5 mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def head_bbox(volume: np.ndarray, threshold: float = 0.08) -> tuple[slice, slice, slice]:
    """Bounding box (one slice per axis) of voxels above ``threshold`` × p99.9 of ``volume``."""
    v = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), 1.0)
    ref = float(np.percentile(v, 99.9))
    mask = v > threshold * max(ref, 1e-12)
    if not mask.any():
        return tuple(slice(0, n) for n in volume.shape)  # type: ignore[return-value]
    mask = ndimage.binary_opening(mask, iterations=1) if mask.sum() > 100 else mask
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)  # type: ignore[return-value]


def frame_head(
    volume: np.ndarray,
    affine: np.ndarray,
    size: int = 64,
    margin_mm: float = 4.0,
    threshold: float = 0.08,
    normalise: bool = True,
    bbox=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop, pad to a cube and resample a head volume to ``size``³ voxels.

    Args:
        volume: (X, Y, Z) array in RAS-like orientation with isotropic voxels (any dtype).
        affine: (4, 4) voxel→world (mm) affine of ``volume``; only diagonal (axis-aligned) affines
            are supported, which is what the bundled sources have.
        size: output edge length in voxels.
        margin_mm: extra space added around the longest head extent.
        threshold: head/background threshold as a fraction of the 99.9th percentile.
        normalise: scale so that the 99.9th percentile becomes 1 and clip to [0, 1].
        bbox: optional precomputed bounding box (tuple of three slices).

    Returns:
        ``(framed, new_affine)``: a float32 (size, size, size) array and the (4, 4) affine mapping its
        voxels to the same world coordinates as the input.
    """
    vol = np.asarray(volume, dtype=np.float32)
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        raise ValueError(f"frame_head expects isotropic voxels, got spacing {spacing}")
    sp = float(spacing[0])
    bb = head_bbox(vol, threshold) if bbox is None else bbox
    lo = np.array([s.start for s in bb], dtype=np.float64)
    hi = np.array([s.stop for s in bb], dtype=np.float64)
    centre = (lo + hi - 1) / 2.0  # voxel coordinates
    extent_mm = (hi - lo).max() * sp + 2 * margin_mm
    out_sp = extent_mm / size  # mm per output voxel
    step = out_sp / sp  # input voxels per output voxel
    if step > 1:
        vol = ndimage.gaussian_filter(vol, 0.4 * step)
    grid = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
    coords = np.stack(np.meshgrid(*(centre[i] + grid for i in range(3)), indexing="ij"))
    out = ndimage.map_coordinates(vol, coords.reshape(3, -1), order=1, mode="constant", cval=0.0)
    out = out.reshape(size, size, size).astype(np.float32)
    start = centre - (size - 1) / 2.0 * step
    new_aff = aff.copy()
    new_aff[:3, :3] = aff[:3, :3] * step
    new_aff[:3, 3] = aff[:3, :3] @ start + aff[:3, 3]
    if normalise:
        out = normalise_intensity(out)
    return out, new_aff


def normalise_intensity(x: np.ndarray, pct: float = 99.9) -> np.ndarray:
    """Scale so the ``pct`` percentile is 1, clip to [0, 1]; the background stays 0."""
    x = np.clip(x, 0, None)
    ref = float(np.percentile(x, pct))
    return np.clip(x / max(ref, 1e-12), 0.0, 1.0).astype(np.float32)
