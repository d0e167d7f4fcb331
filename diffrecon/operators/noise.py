"""Noise models for hyperspectral cubes, and blind estimation of the Gaussian noise level.

Cubes have trailing shape ``(H, W, B)`` (rows, columns, spectral bands; see
:mod:`diffrecon.operators.hsi`); σ is always in the cube's own units (for a cube scaled to [0, 1],
σ = 0.1 is 10 % of the dynamic range). Every generator is seeded and reproducible.

* :func:`add_gaussian_noise` (additive white Gaussian noise, the model DDS2M assumes):

      y = x + σ·n,    n ~ N(0, I) i.i.d. over all voxels,

  with σ a scalar or a per-band vector (σ_b, broadcast along the band axis). Any leading batch
  dimensions are allowed.
* :func:`add_mixed_noise` (the QRNN3D/ICVL "mixed" protocol, one cube ``(H, W, B)``):

      y_b = x_b + σ_b·n_b,    σ_b ~ U(σ_lo, σ_hi) per band (non-i.i.d. Gaussian),

  then, for each corruption kind in ``kinds``, a random subset of ``round(band_fraction·B)`` bands (at
  least one) is corrupted further (subsets are drawn independently per kind, so a band can get several
  kinds). Stripes and dead lines hit a random set J_b of ``round(f·W)`` columns (at least one) of band
  b, with f ~ U(column_fraction):

  - stripes:   y[:, j, b] += o_j for j ∈ J_b, o_j ~ U(−0.25, 0.25) (a constant offset per column);
  - deadlines: y[:, j, b] = 0 for j ∈ J_b;
  - impulse:   with an amount a drawn from ``impulse_amounts``, each pixel of band b independently
    becomes 1 (salt) with probability a/2 or 0 (pepper) with probability a/2.
* :func:`estimate_sigma` (blind σ from the data, Donoho–Johnstone MAD rule on Haar details):

      d = (x[2i,2j] − x[2i+1,2j] − x[2i,2j+1] + x[2i+1,2j+1]) / 2,    σ_b = median(|d|) / 0.6745,

  returned per band ``(B,)`` or as the scalar sqrt(mean_b σ_b²). For white Gaussian noise the
  orthonormal diagonal detail d has standard deviation σ, and 0.6745 is the median of |N(0, 1)|.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputDataError
from .hsi import check_cube, check_sigma

Tensor = torch.Tensor

__all__ = [
    "add_gaussian_noise",
    "add_mixed_noise",
    "estimate_sigma",
]


def _generator(seed: int | torch.Generator | None, device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def add_gaussian_noise(cube: Tensor, sigma, seed: int | torch.Generator | None = 0) -> Tensor:
    """``cube + σ·n`` with i.i.d. standard normal ``n``; σ a scalar or a per-band vector of length B.

    Units: σ is in the cube's units (σ = 0.1 on a [0, 1] cube is DDS2M's default setting, about
    20 dB MPSNR). Raises :class:`~diffrecon.errors.InputDataError` for σ ≤ 0 or a bad cube.
    """
    check_cube(cube, "add_gaussian_noise")
    s = check_sigma(sigma, "add_gaussian_noise: sigma")
    s = torch.as_tensor(s, dtype=cube.dtype, device=cube.device)
    if s.ndim == 1 and s.numel() != cube.shape[-1]:
        raise InputDataError(
            f"add_gaussian_noise: per-band sigma needs {cube.shape[-1]} values, found {s.numel()}"
        )
    g = _generator(seed, cube.device)
    return cube + s * torch.randn(cube.shape, generator=g, dtype=cube.dtype, device=cube.device)


def add_mixed_noise(
    cube: Tensor,
    seed: int = 0,
    sigma_range: tuple[float, float] = (0.01, 0.1),
    band_fraction: float = 1 / 3,
    kinds: Sequence[str] = ("stripes", "deadlines", "impulse"),
    column_fraction: tuple[float, float] = (0.05, 0.15),
    impulse_amounts: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
) -> tuple[Tensor, dict]:
    """Mixed noise after the QRNN3D/ICVL protocol (as ported in HyDe's ``add_noise``).

    1. non-i.i.d. Gaussian: band b gets σ_b ~ U(sigma_range);
    2. then, on a random ``band_fraction`` of bands each, every kind in ``kinds``:
       * ``stripes``: 5–15 % of columns get a constant offset ~ U(−0.25, 0.25);
       * ``deadlines``: 5–15 % of columns set to 0;
       * ``impulse``: salt-and-pepper (1:1) on a fraction drawn from ``impulse_amounts`` of pixels.

    DDS2M models only Gaussian noise of one known σ; this generator exists to measure how far a
    method degrades outside its noise model.

    Returns:
        ``(noisy, info)`` where ``info`` records the per-band σ and which bands got which corruption.
    """
    check_cube(cube, "add_mixed_noise")
    if cube.ndim != 3:
        raise InputDataError(f"add_mixed_noise: expected one cube (H, W, B), found shape {tuple(cube.shape)}")
    h, w, b = cube.shape
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = sigma_range
    sig = lo + (hi - lo) * torch.rand(b, generator=g, dtype=torch.float64)
    noisy = cube + (
        sig.to(cube.dtype) * torch.randn(h, w, b, generator=g, dtype=torch.float64).to(cube.dtype)
    ).to(cube.device)
    info: dict = {"sigma_per_band": sig.tolist()}
    n_sel = max(1, int(round(band_fraction * b)))
    for kind in kinds:
        bands = torch.randperm(b, generator=g)[:n_sel].tolist()
        info[kind] = sorted(bands)
        for band in bands:
            frac = column_fraction[0] + (column_fraction[1] - column_fraction[0]) * float(
                torch.rand(1, generator=g)
            )
            n_cols = max(1, int(round(frac * w)))
            cols = torch.randperm(w, generator=g)[:n_cols]
            if kind == "stripes":
                off = (
                    (torch.rand(n_cols, generator=g, dtype=torch.float64) * 0.5 - 0.25)
                    .to(cube.dtype)
                    .to(cube.device)
                )
                noisy[:, cols.to(cube.device), band] += off
            elif kind == "deadlines":
                noisy[:, cols.to(cube.device), band] = 0.0
            elif kind == "impulse":
                amount = float(impulse_amounts[int(torch.randint(len(impulse_amounts), (1,), generator=g))])
                u = torch.rand(h, w, generator=g).to(cube.device)
                salt = u < amount / 2
                pepper = (u >= amount / 2) & (u < amount)
                noisy[..., band] = torch.where(salt, torch.ones_like(noisy[..., band]), noisy[..., band])
                noisy[..., band] = torch.where(pepper, torch.zeros_like(noisy[..., band]), noisy[..., band])
            else:
                raise InputDataError(
                    f"add_mixed_noise: unknown kind {kind!r}; expected stripes, deadlines, impulse"
                )
    return noisy, info


def estimate_sigma(cube: Tensor, per_band: bool = False) -> Tensor:
    """Estimate the Gaussian noise standard deviation from the cube itself.

    Per band, the diagonal detail coefficients of a one-level orthonormal Haar transform,
    ``d = (x[2i,2j] − x[2i+1,2j] − x[2i,2j+1] + x[2i+1,2j+1]) / 2``, are dominated by noise for
    natural images; the robust estimate is ``σ_b = median(|d|) / 0.6745`` (Donoho & Johnstone's
    MAD rule). Textured images bias it upwards slightly.

    Not :func:`skimage.restoration.estimate_sigma`, which applies the same MAD rule to other
    coefficients: the diagonal details of a Daubechies-2 transform (PyWavelets, symmetric boundary
    extension), with exactly-zero coefficients dropped and the bands averaged as σ rather than σ². The
    two agree on white noise and differ on textured cubes (``tests/test_framing.py``); this one stays
    a few torch ops on the cube's device, with no host round trip and no PyWavelets dependency.

    Args:
        cube: ``(H, W, B)`` with H, W ≥ 2 (NaNs are rejected).
        per_band: return the ``(B,)`` vector instead of the scalar ``sqrt(mean_b σ_b²)``.

    Returns:
        a 0-d tensor (or ``(B,)``) in the cube's units, on the cube's device.
    """
    check_cube(cube, "estimate_sigma")
    if cube.ndim != 3:
        raise InputDataError(f"estimate_sigma: expected one cube (H, W, B), found shape {tuple(cube.shape)}")
    h, w, _ = cube.shape
    if h < 2 or w < 2:
        raise InputDataError(f"estimate_sigma: needs at least 2x2 pixels, found {h}x{w}")
    x = cube[: h - h % 2, : w - w % 2]
    d = (x[0::2, 0::2] - x[1::2, 0::2] - x[0::2, 1::2] + x[1::2, 1::2]) / 2
    sig = d.abs().flatten(0, 1).median(dim=0).values / 0.6745
    return sig if per_band else sig.pow(2).mean().sqrt()
