"""Cartesian k-space sampling masks for the MRI operators of :mod:`diffrecon.operators.mri`.

Every generator returns a :class:`SamplingMask` ``(mask, acceleration)``: ``mask`` is a boolean tensor
on the **centred** k-space grid ``(H, W)`` (the DC sample at index ``(H//2, W//2)``, as for the centred
orthonormal FFT of the MRI operators), True where k-space is acquired, and ``acceleration`` is the
realised acceleration

    R = (number of grid points) / (number of sampled points)          (dimensionless, R ≥ 1),

computed from the mask itself, not the requested value. Each generator hits its requested R up to
one line (1-D masks) or one sample (2-D masks).

* 1-D (line) masks, :func:`uniform1d_mask`, :func:`equispaced1d_mask`, :func:`gaussian1d_mask`: the
  phase-encode axis is the **last** axis (W, columns) and every row (readout) of a sampled column is
  acquired, so the mask is constant along H. ``round(W/R)`` columns are sampled, ``round(W·cf)`` of
  them (``cf`` = ``center_fraction``) in a contiguous calibration (ACS) band around column W//2.
* 2-D masks, :func:`poisson2d_mask` (variable-density Poisson disc over two phase-encode axes, e.g.
  ky–kz of a 3-D acquisition) and :func:`radial_mask` (golden-angle spokes rasterised on the grid):
  ``round(H·W/R)`` samples.

Masks are reproducible: the random draws use ``numpy.random.default_rng(seed)`` (``seed=None``: fresh
entropy). They are CPU tensors; the operators move them to the coil maps' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import InputDataError, require

Tensor = torch.Tensor

__all__ = [
    "SamplingMask",
    "uniform1d_mask",
    "gaussian1d_mask",
    "equispaced1d_mask",
    "poisson2d_mask",
    "radial_mask",
]


class SamplingMask(NamedTuple):
    """A k-space sampling mask and its realised acceleration (grid points / sampled points)."""

    mask: Tensor
    acceleration: float


def _check_accel(name: str, acceleration: float) -> float:
    a = float(acceleration)
    if not math.isfinite(a) or a < 1.0:
        raise InputDataError(f"{name}: expected an acceleration >= 1, found {acceleration}")
    return a


def _shape2(name: str, shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputDataError(f"{name}: expected a 2-D k-space shape (H, W), found {shape}")
    return shape  # type: ignore[return-value]


def _centre_band(n: int, n_center: int) -> np.ndarray:
    start = n // 2 - n_center // 2
    return np.arange(start, start + n_center)


def _lines_mask(name, shape, acceleration, center_fraction, seed, weights_fn) -> SamplingMask:
    h, w = _shape2(name, shape)
    a = _check_accel(name, acceleration)
    if not 0.0 <= center_fraction < 1.0:
        raise InputDataError(f"{name}: expected 0 <= center_fraction < 1, found {center_fraction}")
    n_total = max(1, int(round(w / a)))
    n_center = int(round(w * center_fraction))
    if n_center > n_total:
        raise InputDataError(
            f"{name}: the fully sampled centre ({n_center} of {w} lines, center_fraction={center_fraction}) "
            f"exceeds the budget of {n_total} lines for acceleration {a}; lower center_fraction"
        )
    rng = np.random.default_rng(seed)
    lines = np.zeros(w, dtype=bool)
    lines[_centre_band(w, n_center)] = True
    rest = np.flatnonzero(~lines)
    n_more = n_total - n_center
    if n_more and weights_fn is None:  # equispaced over the non-centre lines, random offset
        offset = float(rng.uniform(0.0, 1.0))
        pos = np.floor((np.arange(n_more) + offset) * len(rest) / n_more).astype(int)
        lines[rest[np.clip(pos, 0, len(rest) - 1)]] = True
    elif n_more:
        p = weights_fn(rest, w)
        p = p / p.sum()
        lines[rng.choice(rest, size=n_more, replace=False, p=p)] = True
    mask = torch.from_numpy(np.broadcast_to(lines[None, :], (h, w)).copy())
    return SamplingMask(mask, w / float(lines.sum()))


def uniform1d_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int | None = 0
) -> SamplingMask:
    """Random Cartesian line mask: a fully sampled centre band plus lines drawn uniformly without replacement.

    Lines are columns (phase-encode axis = last axis, W), all rows sampled. Exactly
    ``round(W / acceleration)`` lines are sampled, ``round(W·center_fraction)`` of them in a contiguous
    band around the DC line W//2, so the realised acceleration W / n_lines equals the request up to
    rounding to a whole line (unlike a draw *with* replacement, which under-samples).

    Args:
        shape: k-space grid ``(H, W)``.
        acceleration: requested R ≥ 1.
        center_fraction: fraction of lines in the calibration (ACS) band.
        seed: seed of the random draw (``None``: fresh entropy).

    Returns:
        :class:`SamplingMask` (bool ``(H, W)``, realised acceleration).
    """
    return _lines_mask(
        "uniform1d_mask", shape, acceleration, center_fraction, seed, lambda idx, w: np.ones(len(idx))
    )


def equispaced1d_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int | None = 0
) -> SamplingMask:
    """Regular Cartesian line mask: a fully sampled centre band plus equispaced lines outside it.

    The classic parallel-imaging (SENSE/GRAPPA) pattern: the ``round(W/R) − n_centre`` outer lines are
    spread evenly over the non-centre lines (spacing ≈ R), with a random offset drawn from ``seed``;
    the realised acceleration equals the request up to one line, as for :func:`uniform1d_mask`.

    Returns:
        :class:`SamplingMask` (bool ``(H, W)``, realised acceleration).
    """
    return _lines_mask("equispaced1d_mask", shape, acceleration, center_fraction, seed, None)


def gaussian1d_mask(
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float = 0.08,
    std_fraction: float = 0.25,
    seed: int | None = 0,
) -> SamplingMask:
    """Variable-density Cartesian line mask: centre band plus lines drawn ∝ a Gaussian in ky.

    The non-centre lines are drawn without replacement with probability ∝ exp(−(k − W/2)²/(2σ²)),
    σ = ``std_fraction``·W. The line count is exactly ``round(W / acceleration)``.

    Returns:
        :class:`SamplingMask` (bool ``(H, W)``, realised acceleration).
    """
    if std_fraction <= 0:
        raise InputDataError(f"gaussian1d_mask: expected std_fraction > 0, found {std_fraction}")

    def weights(idx, w):
        sigma = std_fraction * w
        return np.exp(-0.5 * ((idx - w // 2) / sigma) ** 2) + 1e-12

    return _lines_mask("gaussian1d_mask", shape, acceleration, center_fraction, seed, weights)


def _adjust_count(
    mask: np.ndarray, n_target: int, protect: np.ndarray, rng, density: np.ndarray
) -> np.ndarray:
    """Add or remove samples until ``mask.sum() == n_target`` (never removing protected ones)."""
    mask = mask.copy()
    n = int(mask.sum())
    if n > n_target:
        cand = np.flatnonzero(mask.ravel() & ~protect.ravel())
        p = 1.0 / np.maximum(density.ravel()[cand], 1e-12)  # remove preferentially where density is low
        drop = rng.choice(cand, size=min(n - n_target, len(cand)), replace=False, p=p / p.sum())
        mask.ravel()[drop] = False
    elif n < n_target:
        cand = np.flatnonzero(~mask.ravel())
        p = np.maximum(density.ravel()[cand], 1e-12)
        add = rng.choice(cand, size=min(n_target - n, len(cand)), replace=False, p=p / p.sum())
        mask.ravel()[add] = True
    return mask


def poisson2d_mask(
    shape: Sequence[int],
    acceleration: float,
    calib: Sequence[int] | int = 24,
    seed: int = 0,
    crop_corner: bool = True,
) -> SamplingMask:
    """2-D variable-density Poisson-disc mask (for 2 phase-encode axes, e.g. 3D Cartesian ky–kz).

    Generated by ``sigpy.mri.poisson`` (density ∝ 1/(1 + s·r), slope s found by bisection, fully
    sampled ``calib`` box at the centre), then trimmed or topped up — outside the calibration box,
    following the same density — to exactly ``round(H·W / acceleration)`` samples, so the realised
    acceleration equals the request up to one sample (sigpy alone only promises ±0.1).

    Args:
        shape: ``(H, W)``.
        acceleration: requested R > 1.
        calib: side(s) of the fully sampled centre box.
        seed: seed (sigpy's generator and the trimming).
        crop_corner: zero the k-space corners outside the inscribed ellipse.

    Returns:
        :class:`SamplingMask` (bool ``(H, W)``, realised acceleration).

    Raises:
        MissingDependencyError: without sigpy (``pip install 'diffrecon[mri]'``).
    """
    h, w = _shape2("poisson2d_mask", shape)
    a = _check_accel("poisson2d_mask", acceleration)
    if a <= 1.0:
        raise InputDataError(f"poisson2d_mask: expected an acceleration > 1, found {acceleration}")
    cal = (int(calib), int(calib)) if isinstance(calib, (int, np.integer)) else tuple(int(c) for c in calib)
    if len(cal) != 2 or cal[0] > h or cal[1] > w or min(cal) < 0:
        raise InputDataError(f"poisson2d_mask: expected a calibration box within {(h, w)}, found {cal}")
    n_target = int(round(h * w / a))
    if cal[0] * cal[1] > n_target:
        raise InputDataError(
            f"poisson2d_mask: calibration box {cal} ({cal[0] * cal[1]} samples) exceeds the "
            f"budget of {n_target} samples at acceleration {a}"
        )
    mri = require("sigpy.mri", "mri")
    try:
        m = mri.poisson((h, w), a, calib=cal, dtype=np.float32, crop_corner=crop_corner, seed=seed) != 0
    except ValueError as exc:  # sigpy could not reach the acceleration within its tolerance
        raise InputDataError(
            f"poisson2d_mask: sigpy could not generate a {a}x mask for {(h, w)} ({exc})"
        ) from exc
    yy, xx = np.mgrid[:h, :w]
    ry = np.maximum(np.abs(yy - h / 2) - cal[0] / 2, 0)
    rx = np.maximum(np.abs(xx - w / 2) - cal[1] / 2, 0)
    r = np.sqrt((ry / max(ry.max(), 1)) ** 2 + (rx / max(rx.max(), 1)) ** 2)
    density = 1.0 / (1.0 + 4.0 * r)
    if crop_corner:
        density = density * (r < 1)
    protect = np.zeros((h, w), dtype=bool)
    protect[_centre_band(h, cal[0])[:, None], _centre_band(w, cal[1])[None, :]] = True
    m = m | protect
    m = _adjust_count(m, n_target, protect, np.random.default_rng(seed), density)
    return SamplingMask(torch.from_numpy(m), h * w / float(m.sum()))


def radial_mask(shape: Sequence[int], acceleration: float, seed: int | None = 0) -> SamplingMask:
    """Cartesian-rasterised radial mask: full-diameter spokes through the k-space centre.

    Spokes at angles θ₀ + k·φ (φ = golden angle π(√5−1)/2, θ₀ drawn from ``seed``) are rasterised
    onto the grid (nearest grid point every half pixel) and added
    until ``round(H·W / acceleration)`` points are covered; the last spoke contributes only its points
    nearest the centre, so the realised acceleration equals the request up to one sample.

    Returns:
        :class:`SamplingMask` (bool ``(H, W)``, realised acceleration).
    """
    h, w = _shape2("radial_mask", shape)
    a = _check_accel("radial_mask", acceleration)
    n_target = max(1, int(round(h * w / a)))
    rng = np.random.default_rng(seed)
    theta0 = float(rng.uniform(0, math.pi))
    cy, cx = h // 2, w // 2
    radius = math.hypot(h, w) / 2
    t = np.arange(-radius, radius + 0.5, 0.5)
    order = np.argsort(np.abs(t), kind="stable")
    t = t[order]
    mask = np.zeros((h, w), dtype=bool)
    count = 0
    phi = math.pi * (math.sqrt(5.0) - 1.0) / 2.0
    k = 0
    while count < n_target:
        th = theta0 + k * phi
        ys = np.rint(cy + t * math.sin(th)).astype(int)
        xs = np.rint(cx + t * math.cos(th)).astype(int)
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        for y, x in zip(ys[ok], xs[ok], strict=True):
            if not mask[y, x]:
                mask[y, x] = True
                count += 1
                if count == n_target:
                    break
        k += 1
        if k > 100 * (h + w):  # pragma: no cover - cannot happen for a > 1
            break
    return SamplingMask(torch.from_numpy(mask), h * w / float(mask.sum()))
