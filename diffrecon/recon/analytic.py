"""Analytic reconstruction: filtered back projection (parallel and fan beam) and FDK (cone beam).

All three follow the same recipe: weight the measured projections, filter every detector row with a
ramp-type filter (:mod:`diffrecon.recon.filters`), and back-project pixel-driven with linear
(bilinear for cone beam) interpolation on the detector, summing the views with quadrature weights.
Geometry conventions are those of :mod:`diffrecon.operators.geometry` (pixel units, radians), so
``fbp(A(x), A) ≈ x`` for a ``ParallelBeam2D``/``FanBeam2D``/``ConeBeam3D`` operator ``A``.

Formulas (S = source–axis distance, D = axis–detector distance, s = detector spacing,
u = signed detector coordinate, θ the view angle, N the number of views):

* **Parallel.** f(x, y) = Σ_θ w_θ · q_θ(x cos θ + y sin θ), q_θ = ramp-filtered p_θ, w_θ = π/N
  (the quadrature weight of views spread uniformly over [0, π); for views over [0, 2π) each line is
  seen twice and π/N is again Δθ/2).
* **Fan beam (flat detector).** Rescale the detector to the rotation axis, u' = u·S/(S + D). Pre-weight
  p by the cosine of the ray's angle to the central ray, S/√(S² + u'²); filter along u' (spacing
  s·S/(S + D)); back-project with the distance weight S²/L², where L = S − x sin θ + y cos θ is the
  pixel's depth along the central ray, at u'(x, y) = S·(x cos θ + y sin θ)/L. View weights: π/N for a
  full 2π scan (every line measured twice); Parker weights × Δθ for a short scan covering at least
  π + 2γ_max (γ_max the half fan angle); otherwise a warning and π/N (intensity kept, artefacts
  expected). Angles must increase or decrease monotonically for Parker weighting; an unordered list
  is treated like a full scan (π/N).
* **FDK.** The fan formulas applied to every detector row, with the cosine pre-weight
  S/√(S² + u'² + v'²) (v' = v·S/(S + D) the rescaled row coordinate) and the voxel's detector row
  v'(x, y, z) = S·z/L.

Parker weights for a ray at fan angle γ = atan(u/(S + D)) (positive towards +u) and view offset
β = θ − θ₀ ∈ [0, π + 2Γ], with Γ = (scan range − π)/2 ≥ γ_max:

    w = sin²(π/4 · β/(Γ + γ))                for 0 ≤ β < 2(Γ + γ)
    w = 1                                    for 2(Γ + γ) ≤ β ≤ π + 2γ
    w = sin²(π/4 · (π + 2Γ − β)/(Γ − γ))     for π + 2γ < β ≤ π + 2Γ

so that a ray and its conjugate (β + π − 2γ, −γ) — the same line seen from the other side in this
package's orientation — have weights summing to one.
"""

from __future__ import annotations

import math
import warnings
from typing import Union

import numpy as np
import torch

from ..errors import GeometryError, InputDataError
from ..operators.geometry import ConeGeometry, FanGeometry, ParallelGeometry
from .filters import FILTERS, check_filter, filter_projections

Tensor = torch.Tensor
Geometry = Union[ParallelGeometry, FanGeometry, ConeGeometry]  # noqa: UP007

__all__ = ["FILTERS", "fbp", "fdk"]

# bound on the number of interpolation samples (times batch) live at once in back projection
_CHUNK_SAMPLES = 1 << 23


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _geometry_of(obj) -> Geometry:
    if isinstance(obj, (ParallelGeometry, FanGeometry, ConeGeometry)):
        return obj
    for candidate in (getattr(obj, "geometry", None), getattr(getattr(obj, "op2d", None), "geometry", None)):
        if isinstance(candidate, (ParallelGeometry, FanGeometry, ConeGeometry)):
            return candidate
    raise GeometryError(
        "expected a CT operator with a .geometry (ParallelBeam2D, FanBeam2D, ConeBeam3D, or SliceWise of a "
        f"2D one) or a ParallelGeometry/FanGeometry/ConeGeometry, found {type(obj).__name__}"
    )


def _check_data(data, expected: tuple[int, ...], what: str) -> Tensor:
    if not isinstance(data, Tensor):
        try:
            data = torch.as_tensor(np.asarray(data))
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"{what}: expected a tensor or array, found {type(data).__name__}") from exc
    if data.is_complex():
        raise InputDataError(f"{what}: expected real-valued data, found dtype {data.dtype}")
    if not data.is_floating_point():
        data = data.to(torch.float32)
    n = len(expected)
    if data.ndim < n or tuple(data.shape[data.ndim - n:]) != tuple(expected):
        raise InputDataError(
            f"{what}: expected trailing shape {tuple(expected)} (n_angles, detector …) from the geometry, "
            f"with any leading batch dims, found shape {tuple(data.shape)}"
        )
    if not bool(torch.isfinite(data).all()):
        raise InputDataError(f"{what}: expected finite values, found NaN or Inf")
    return data


def _angular_weights(geom: FanGeometry | ConeGeometry, u: Tensor) -> Tensor:
    """View × detector-column weights ``(n_angles, n_cols)`` for fan/cone beam (see module docstring)."""
    theta = torch.as_tensor(geom.angles, dtype=torch.float64)
    n = theta.numel()
    s, d = geom.source_distance, geom.detector_distance
    n_cols = u.numel()
    spacing = float(u[1] - u[0]) if n_cols > 1 else 1.0
    gamma_max = math.atan(0.5 * n_cols * abs(spacing) / (s + d))
    if n < 2:
        warnings.warn("fan/cone-beam reconstruction from a single view; the result is a smeared back "
                      "projection", stacklevel=3)
        return torch.full((n, n_cols), math.pi / max(n, 1), dtype=torch.float64)
    diffs = torch.diff(theta)
    direction = 1.0 if bool((diffs > 0).all()) else (-1.0 if bool((diffs < 0).all()) else 0.0)
    step = float(diffs.abs().mean())
    span = float((theta[-1] - theta[0]).abs()) + step  # range covered, counting the last view's share
    if direction == 0.0 or span >= 2 * math.pi * (1 - 1e-6):
        return torch.full((n, n_cols), math.pi / n, dtype=torch.float64)
    sampled = span - step  # β of the last view
    if sampled + 1e-9 < math.pi + 2 * gamma_max - step or sampled <= math.pi:
        warnings.warn(
            f"fan/cone-beam views cover {math.degrees(span):.1f}°, less than a full scan (360°) or a short "
            f"scan (180° + fan angle {math.degrees(2 * gamma_max):.1f}°); reconstructing with uniform "
            "weights π/N — expect limited-angle artefacts",
            stacklevel=3,
        )
        return torch.full((n, n_cols), math.pi / n, dtype=torch.float64)
    # Parker short-scan weights with the generalised half-range Γ = (range − π)/2
    big_gamma = 0.5 * (sampled - math.pi)
    beta = (direction * (theta - theta[0]))[:, None]
    # mirrored rotation reverses which side of the fan a conjugate ray falls on
    gamma = (direction * torch.atan(u.to(torch.float64) / (s + d)))[None, :]
    gamma = gamma.clamp(-big_gamma + 1e-9, big_gamma - 1e-9)
    w = torch.ones(n, n_cols, dtype=torch.float64)
    rise = beta < 2 * (big_gamma + gamma)
    fall = beta > math.pi + 2 * gamma
    w = torch.where(rise, torch.sin(0.25 * math.pi * beta / (big_gamma + gamma)) ** 2, w)
    w_fall = torch.sin(0.25 * math.pi * (math.pi + 2 * big_gamma - beta) / (big_gamma - gamma)) ** 2
    w = torch.where(fall, w_fall, w)
    w = w.clamp(0.0, 1.0)
    return w * step


def _linear_take(table: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation of the rows of ``table`` ``(B, A, n)`` at fractional bins ``t`` ``(A, M)``.

    Returns ``(B, A, M)``.

    Bin j sits at t = j; samples outside [0, n − 1] see zeros beyond the ends.
    """
    b, a, n = table.shape
    i0 = torch.floor(t)
    w1 = (t - i0).to(table.dtype)
    i0 = i0.to(torch.int64)
    ok0 = (i0 >= 0) & (i0 < n)
    ok1 = (i0 >= -1) & (i0 < n - 1)
    offset = (torch.arange(a, device=t.device) * n)[:, None]
    zero = torch.zeros((), dtype=torch.int64, device=t.device)
    idx0 = torch.where(ok0, i0, zero) + offset
    idx1 = torch.where(ok1, i0 + 1, zero) + offset
    flat = table.reshape(b, a * n)
    v0 = torch.index_select(flat, 1, idx0.reshape(-1)).reshape(b, *t.shape)
    v1 = torch.index_select(flat, 1, idx1.reshape(-1)).reshape(b, *t.shape)
    zf = torch.zeros((), dtype=table.dtype, device=t.device)
    return torch.where(ok0, (1 - w1), zf) * v0 + torch.where(ok1, w1, zf) * v1


def _bilinear_take(table: Tensor, tr: Tensor, tc: Tensor) -> Tensor:
    """Bilinear interpolation of ``table`` ``(B, A, R, C)`` at rows ``tr`` and columns ``tc`` (broadcast to
    ``(A, M)``) → ``(B, A, M)``; zeros outside the detector."""
    b, a, n_r, n_c = table.shape
    tr, tc = torch.broadcast_tensors(tr, tc)
    r0 = torch.floor(tr)
    c0 = torch.floor(tc)
    wr = (tr - r0).to(table.dtype)
    wc = (tc - c0).to(table.dtype)
    r0 = r0.to(torch.int64)
    c0 = c0.to(torch.int64)
    offset = (torch.arange(a, device=tr.device) * (n_r * n_c))[:, None]
    flat = table.reshape(b, a * n_r * n_c)
    zero_i = torch.zeros((), dtype=torch.int64, device=tr.device)
    zf = torch.zeros((), dtype=table.dtype, device=tr.device)
    out = None
    for dr, wrow in ((0, 1 - wr), (1, wr)):
        r = r0 + dr
        r_ok = (r >= 0) & (r < n_r)
        for dc, wcol in ((0, 1 - wc), (1, wc)):
            c = c0 + dc
            ok = r_ok & (c >= 0) & (c < n_c)
            idx = torch.where(ok, r * n_c + c, zero_i) + offset
            vals = torch.index_select(flat, 1, idx.reshape(-1)).reshape(b, *tr.shape)
            term = torch.where(ok, wrow * wcol, zf) * vals
            out = term if out is None else out + term
    return out


def _pixel_grid(shape2d: tuple[int, int], dtype, device) -> tuple[Tensor, Tensor]:
    h, w = shape2d
    y = (h - 1) / 2.0 - torch.arange(h, dtype=dtype, device=device)
    x = torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2.0
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def _batched(data, shape: tuple[int, ...], what: str) -> tuple[Tensor, torch.Size]:
    """Checked data as a float32/float64 batch ``(prod(lead), *shape)``, and its leading dims ``lead``."""
    x = _check_data(data, shape, what)
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    lead = x.shape[: x.ndim - len(shape)]
    if x.numel() == 0:
        raise InputDataError(f"{what}: no data (leading dimensions {tuple(lead)} hold zero sinograms)")
    return x.reshape(math.prod(lead), *shape), lead


def fbp(sinogram: Tensor | np.ndarray, operator: object, filter: str = "ramp", *,
        frequency_cutoff: float = 1.0) -> Tensor:
    """Filtered back projection for parallel-beam and fan-beam (flat detector) data; FDK for cone beam.

    Args:
        sinogram: ``(..., n_angles, n_detectors)`` for 2D geometries, ``(..., n_angles, det_rows,
            det_cols)`` for cone beam; leading dimensions (slices, batch) are reconstructed
            independently in one batched pass. Tensor or array; real.
        operator: a ``ParallelBeam2D``/``FanBeam2D``/``ConeBeam3D`` (only its ``.geometry`` is used), a
            ``SliceWise`` wrapping a 2D one, or a geometry object from :mod:`diffrecon.operators.geometry`.
        filter: one of ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hann"``.
        frequency_cutoff: fraction of the Nyquist frequency above which the filter is zero, in (0, 1].

    Returns:
        The image ``(..., H, W)`` (or volume ``(..., D, H, W)``) in the same intensity units as the
        object whose line integrals (pixel-length units) produced the sinogram, on the sinogram's
        device, float64 for float64 input and float32 otherwise.

    Raises:
        InputDataError: sinogram shape not matching the geometry, NaN/Inf values, unknown filter.
        GeometryError: ``operator`` carries no CT geometry.

    Example::

        >>> from diffrecon.operators import ParallelGeometry, sparse_angles
        >>> g = ParallelGeometry((64, 64), sparse_angles(90), 91)
        >>> fbp(torch.zeros(90, 91), g).shape
        torch.Size([64, 64])
    """
    geom = _geometry_of(operator)
    if isinstance(geom, ConeGeometry):
        return fdk(sinogram, geom, filter, frequency_cutoff=frequency_cutoff)
    name = check_filter(filter)
    sino, lead = _batched(sinogram, geom.sinogram_shape, "fbp sinogram")
    dtype, device = sino.dtype, sino.device
    n_angles, n_det = geom.sinogram_shape
    spacing = geom.detector_spacing
    u = torch.as_tensor(geom.detector_offsets(), dtype=torch.float64)

    if isinstance(geom, ParallelGeometry):
        filtered = filter_projections(sino, name, detector_spacing=spacing, frequency_cutoff=frequency_cutoff)
        view_w = torch.full((n_angles,), math.pi / n_angles, dtype=dtype, device=device)
        return _backproject_parallel(filtered * view_w[:, None], geom).reshape(*lead, *geom.image_shape)

    # fan beam, flat detector
    s, d = geom.source_distance, geom.detector_distance
    mag = (s + d) / s
    pre = ((s + d) / torch.sqrt((s + d) ** 2 + u ** 2))[None, :] * _angular_weights(geom, u)
    weighted = sino * pre.to(dtype=dtype, device=device)
    filtered = filter_projections(weighted, name, detector_spacing=spacing / mag,
                                  frequency_cutoff=frequency_cutoff)
    return _backproject_fan(filtered, geom).reshape(*lead, *geom.image_shape)


def fdk(projections: Tensor | np.ndarray, operator_or_geometry: object, filter: str = "ramp", *,
        frequency_cutoff: float = 1.0) -> Tensor:
    """Feldkamp–Davis–Kress reconstruction for circular cone-beam data on a flat detector.

    Geometry as for :class:`~diffrecon.operators.cone.ConeBeam3D` (S = source–axis and D = axis–detector
    distance, orbit about z). With the detector coordinates rescaled to the rotation axis,
    u' = u·S/(S + D) (columns) and v' = v·S/(S + D) (rows), and view weights w_θ(u') (π/N for a full
    2π scan, Parker weights × Δθ for a short scan; see the module docstring), FDK computes

        q_θ(v', u') = h ⊛_u' [ w_θ(u') · S/√(S² + u'² + v'²) · p_θ(v', u') ]    (every row, filter h),
        f(x, y, z) = Σ_θ (S/L)² · q_θ(S·z/L, S·(x cos θ + y sin θ)/L),     L = S − x sin θ + y cos θ,

    L being the voxel's depth along the central ray; q_θ is sampled bilinearly on the detector (zero
    outside it). The result is exact in the mid-plane z = 0 (where it reduces to fan-beam FBP); away
    from it FDK is an approximation whose error grows with the cone angle.

    Args:
        projections: ``(..., n_angles, det_rows, det_cols)`` line integrals in voxel-length units (as
            produced by ``ConeBeam3D``); leading dims are batch dims, reconstructed in one pass.
        operator_or_geometry: a ``ConeBeam3D`` or a :class:`~diffrecon.operators.geometry.ConeGeometry`
            (lengths in voxels, angles in radians).
        filter: as in :func:`fbp`.
        frequency_cutoff: as in :func:`fbp`.

    Returns:
        The volume ``(..., D, H, W)`` in the intensity units of the object that produced the
        projections, on the projections' device, float64 for float64 input and float32 otherwise.

    Raises:
        InputDataError, GeometryError: as for :func:`fbp`; GeometryError also for a non-cone geometry.

    Example::

        >>> import math, torch
        >>> from diffrecon.operators import ConeBeam3D
        >>> A = ConeBeam3D((16, 32, 32), torch.linspace(0, 2 * math.pi, 73)[:-1], 200.0, 100.0, (24, 64))
        >>> x = torch.zeros(16, 32, 32)
        >>> x[4:12, 8:24, 8:24] = 1.0
        >>> v = fdk(A(x), A)
        >>> v.shape
        torch.Size([16, 32, 32])
        >>> bool((v - x).abs().mean() < 0.05)
        True
    """
    geom = _geometry_of(operator_or_geometry)
    if not isinstance(geom, ConeGeometry):
        raise GeometryError(f"fdk: expected a cone-beam geometry (ConeBeam3D or ConeGeometry), found "
                            f"{geom.kind!r}; use fbp for 2D geometries")
    name = check_filter(filter)
    proj, lead = _batched(projections, geom.projection_shape, "fdk projections")
    dtype, device = proj.dtype, proj.device
    n_rows, n_cols = geom.detector_shape
    s_row, s_col = geom.detector_spacing
    s, d = geom.source_distance, geom.detector_distance
    mag = (s + d) / s
    u = (torch.arange(n_cols, dtype=torch.float64) - (n_cols - 1) / 2.0) * s_col
    v = (torch.arange(n_rows, dtype=torch.float64) - (n_rows - 1) / 2.0) * s_row
    cos_w = (s + d) / torch.sqrt((s + d) ** 2 + u[None, :] ** 2 + v[:, None] ** 2)  # (R, C)
    pre = cos_w[None] * _angular_weights(geom, u)[:, None, :]  # (A, R, C)
    weighted = proj * pre.to(dtype=dtype, device=device)
    filtered = filter_projections(weighted, name, detector_spacing=s_col / mag,
                                  frequency_cutoff=frequency_cutoff)
    return _backproject_cone(filtered, geom).reshape(*lead, *geom.volume_shape)


# ---------------------------------------------------------------------------------------------
# back projectors (pixel-driven, chunked over views, batched over leading dims)
# ---------------------------------------------------------------------------------------------
def _angles_on(geom, dtype, device) -> Tensor:
    return torch.as_tensor(geom.angles, dtype=torch.float64).to(dtype=dtype, device=device)


def _backproject_parallel(q: Tensor, geom: ParallelGeometry) -> Tensor:
    """Σ_θ q_θ(x cos θ + y sin θ) for pre-weighted, filtered data ``q`` ``(B, A, n)``; → ``(B, H·W)``."""
    b, n_angles, n_det = q.shape
    xx, yy = _pixel_grid(geom.image_shape, q.dtype, q.device)
    theta = _angles_on(geom, q.dtype, q.device)
    out = torch.zeros(b, xx.numel(), dtype=q.dtype, device=q.device)
    chunk = max(1, _CHUNK_SAMPLES // max(1, 2 * b * xx.numel()))
    centre = (n_det - 1) / 2.0
    for a0 in range(0, n_angles, chunk):
        th = theta[a0:a0 + chunk, None]
        t = (xx[None] * torch.cos(th) + yy[None] * torch.sin(th)) / geom.detector_spacing + centre
        out += _linear_take(q[:, a0:a0 + chunk], t).sum(1)
    return out


def _fan_coordinates(theta: Tensor, xx: Tensor, yy: Tensor, s: float):
    """Depth L = S − x sin θ + y cos θ and iso-plane detector coordinate u' = S·(x cos θ + y sin θ)/L."""
    th = theta[:, None]
    sin, cos = torch.sin(th), torch.cos(th)
    depth = s - xx[None] * sin + yy[None] * cos
    u_iso = s * (xx[None] * cos + yy[None] * sin) / depth
    return depth, u_iso


def _backproject_fan(q: Tensor, geom: FanGeometry) -> Tensor:
    """Σ_θ (S/L)² q_θ(u(x, y)) for weighted, filtered fan data ``q`` ``(B, A, n)`` → ``(B, H·W)``."""
    b, n_angles, n_det = q.shape
    xx, yy = _pixel_grid(geom.image_shape, q.dtype, q.device)
    theta = _angles_on(geom, q.dtype, q.device)
    s, d = geom.source_distance, geom.detector_distance
    mag = (s + d) / s
    out = torch.zeros(b, xx.numel(), dtype=q.dtype, device=q.device)
    chunk = max(1, _CHUNK_SAMPLES // max(1, 2 * b * xx.numel()))
    centre = (n_det - 1) / 2.0
    for a0 in range(0, n_angles, chunk):
        depth, u_iso = _fan_coordinates(theta[a0:a0 + chunk], xx, yy, s)
        t = u_iso * mag / geom.detector_spacing + centre
        out += ((s / depth) ** 2 * _linear_take(q[:, a0:a0 + chunk], t)).sum(1)
    return out


def _backproject_cone(q: Tensor, geom: ConeGeometry) -> Tensor:
    """Σ_θ (S/L)² q_θ(v(x, y, z), u(x, y)) for weighted, filtered data ``(B, A, R, C)``; → ``(B, D·H·W)``."""
    b, n_angles, n_rows, n_cols = q.shape
    n_z, n_y, n_x = geom.volume_shape
    xx, yy = _pixel_grid((n_y, n_x), q.dtype, q.device)  # (H·W,)
    z = torch.arange(n_z, dtype=q.dtype, device=q.device) - (n_z - 1) / 2.0
    theta = _angles_on(geom, q.dtype, q.device)
    s, d = geom.source_distance, geom.detector_distance
    s_row, s_col = geom.detector_spacing
    mag = (s + d) / s
    out = torch.zeros(b, n_z, xx.numel(), dtype=q.dtype, device=q.device)
    # bound the live samples: slabs of slices if one view of the whole volume is already too many
    slab = max(1, min(n_z, _CHUNK_SAMPLES // max(1, 4 * b * xx.numel())))
    chunk = max(1, _CHUNK_SAMPLES // max(1, 4 * b * slab * xx.numel()))
    c_row, c_col = (n_rows - 1) / 2.0, (n_cols - 1) / 2.0
    for a0 in range(0, n_angles, chunk):
        depth, u_iso = _fan_coordinates(theta[a0:a0 + chunk], xx, yy, s)  # (a, H·W)
        a = depth.shape[0]
        tc = (u_iso * mag / s_col + c_col)[:, None, :]  # (a, 1, H·W)
        dist_w = ((s / depth) ** 2)[None, :, None, :]
        for z0 in range(0, n_z, slab):
            zs = z[z0:z0 + slab]
            tr = (s * mag / s_row) * zs[None, :, None] / depth[:, None, :] + c_row  # (a, slab, H·W)
            vals = _bilinear_take(q[:, a0:a0 + chunk], tr.reshape(a, -1),
                                  tc.expand(a, zs.numel(), -1).reshape(a, -1)).reshape(b, a, zs.numel(), -1)
            out[:, z0:z0 + slab] += dist_w.mul(vals).sum(1)
    return out.reshape(b, -1)
