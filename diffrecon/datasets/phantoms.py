"""Analytic phantoms: the 3-D modified Shepp–Logan head phantom."""

from __future__ import annotations

import math

import torch

# Ellipsoids of the modified 3-D Shepp–Logan phantom (Kak & Slaney's 2-D head extended to 3-D,
# with the higher-contrast "modified" intensities). Columns: value added, semi-axes (a, b, c),
# centre (x0, y0, z0), rotation about z in degrees. Coordinates are normalised to [-1, 1].
_MODIFIED_SHEPP_LOGAN_3D = (
    (1.0, 0.6900, 0.920, 0.810, 0.00, 0.0000, 0.00, 0.0),
    (-0.8, 0.6624, 0.874, 0.780, 0.00, -0.0184, 0.00, 0.0),
    (-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0000, 0.00, -18.0),
    (-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0000, 0.00, 18.0),
    (0.1, 0.2100, 0.250, 0.410, 0.00, 0.3500, -0.15, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.00, 0.1000, 0.25, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.00, -0.1000, 0.25, 0.0),
    (0.1, 0.0460, 0.023, 0.050, -0.08, -0.6050, 0.00, 0.0),
    (0.1, 0.0230, 0.023, 0.020, 0.00, -0.6060, 0.00, 0.0),
    (0.1, 0.0230, 0.046, 0.020, 0.06, -0.6050, 0.00, 0.0),
)


def shepp_logan_3d(
    shape: tuple[int, int, int] = (64, 64, 64), dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The modified 3-D Shepp–Logan phantom sampled at voxel centres.

    Args:
        shape: ``(D, H, W)`` = (z slices, y rows, x columns); voxel (k, i, j) sits at normalised
            coordinates z = −1 + (2k + 1)/D, y = 1 − (2i + 1)/H (rows run downwards, y up),
            x = −1 + (2j + 1)/W, matching :mod:`diffrecon.operators.geometry`.
        dtype: output dtype.

    Returns:
        Tensor of shape ``shape`` with values in [0, 1] (background 0, skull 1, brain 0.2).
    """
    d, h, w = (int(s) for s in shape)
    z = -1 + (2 * torch.arange(d, dtype=torch.float64) + 1) / d
    y = 1 - (2 * torch.arange(h, dtype=torch.float64) + 1) / h
    x = -1 + (2 * torch.arange(w, dtype=torch.float64) + 1) / w
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    vol = torch.zeros(d, h, w, dtype=torch.float64)
    for value, a, b, c, x0, y0, z0, phi in _MODIFIED_SHEPP_LOGAN_3D:
        cp, sp = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        xr = (xx - x0) * cp + (yy - y0) * sp
        yr = -(xx - x0) * sp + (yy - y0) * cp
        inside = (xr / a) ** 2 + (yr / b) ** 2 + ((zz - z0) / c) ** 2 <= 1.0
        vol[inside] += value
    return vol.clamp_(0.0, 1.0).to(dtype)
