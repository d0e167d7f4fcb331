"""Coil sensitivity maps for multi-coil MRI: simulated (birdcage) and calibrated (ESPIRiT).

Coil maps S_c are complex tensors (complex64 by default) of shape ``(C, H, W)`` or ``(C, D, H, W)``,
one map per coil c on the image grid, or a per-slice stack ``(S, C, H, W)``; they are the ``maps``
argument of :class:`~diffrecon.operators.mri.MultiCoilMRI` and
:class:`~diffrecon.operators.mri.MultiCoilMRI3D`. Both generators here return maps normalised to

    Σ_c |S_c(r)|² = 1          (dimensionless)

at every voxel r (ESPIRiT: inside the support, zero outside), so that SENSE with a full mask is an
isometry and reconstructs the object rather than an intensity-weighted version of it.

* :func:`birdcage_maps` simulates loop coils on a cylinder around the object (no data needed).
* :func:`espirit_maps` estimates the maps from the fully sampled centre of measured k-space
  (Uecker et al. 2014). Its k-space input follows the operators' convention: **centred** (DC at index
  n//2 of each axis), related to coil images by the centred orthonormal FFT of
  :mod:`diffrecon.operators._fft` (``ifftc``). The phase of coil 0 is removed from its maps (only
  relative phases are determined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputDataError, require
from . import _fft

Tensor = torch.Tensor

__all__ = [
    "birdcage_maps",
    "espirit_maps",
]


def birdcage_maps(
    shape: Sequence[int],
    radius: float = 1.5,
    n_rings: int = 1,
    normalize: bool = True,
    dtype: torch.dtype = torch.complex64,
) -> Tensor:
    """Simulated coil sensitivities of loop coils evenly spaced on a cylinder around the object.

    Model: coordinates are normalised to [−1, 1] across each in-plane axis (and along z in 3D). Coil
    c sits at p_c = (radius·cos θ_c, radius·sin θ_c[, z_c]) with θ_c = 2π·(c mod n)/n (n coils per
    ring, ``n_rings`` rings at evenly spaced z_c in 3D). Its sensitivity at r is

        S_c(r) = exp(i·(θ_c − arg((r − p_c)_xy))) / ‖r − p_c‖,

    a smooth magnitude falling off with distance and a phase winding around the coil, as for a small
    loop seen from the object. With ``normalize=True`` the maps are divided by their root-sum-of-
    squares, so Σ_c |S_c|² = 1 at every voxel (the normalisation ESPIRiT maps also have; the
    simulation then reconstructs the object itself rather than an intensity-weighted version).

    Args:
        shape: ``(C, H, W)`` or ``(C, D, H, W)``.
        radius: coil distance from the centre in units of the half field of view (> 1: outside).
        n_rings: rings along z (3D only); must divide C.
        normalize: root-sum-of-squares normalisation.

    Returns:
        complex maps of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise InputDataError(f"birdcage_maps: expected shape (C, H, W) or (C, D, H, W), found {shape}")
    c = shape[0]
    if len(shape) == 3 and n_rings != 1:
        raise InputDataError(f"birdcage_maps: n_rings > 1 needs a 3-D shape (C, D, H, W), found {shape}")
    if c % n_rings:
        raise InputDataError(f"birdcage_maps: n_rings={n_rings} must divide the coil count {c}")
    per_ring = c // n_rings
    grid = shape[1:]
    axes = [
        torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        for n in grid
    ]
    mesh = torch.meshgrid(*axes, indexing="ij")
    yy, xx = mesh[-2], mesh[-1]
    zz = mesh[0] if len(grid) == 3 else torch.zeros_like(yy)
    idx = torch.arange(c)
    theta = 2 * math.pi * (idx % per_ring).to(torch.float64) / per_ring
    ring = (idx // per_ring).to(torch.float64)
    zc = (ring + 0.5) / n_rings * 2 - 1 if n_rings > 1 else torch.zeros(c, dtype=torch.float64)
    view = (c,) + (1,) * len(grid)
    px = (radius * torch.cos(theta)).view(view)
    py = (radius * torch.sin(theta)).view(view)
    pz = zc.view(view)
    dx, dy, dz = xx - px, yy - py, zz - pz
    dist = torch.sqrt(dx**2 + dy**2 + dz**2).clamp_min(1e-6)
    phase = theta.view(view) - torch.atan2(dy, dx)
    maps = torch.polar(1.0 / dist, phase)
    if normalize:
        maps = maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))
    return maps.to(dtype)


def _espirit_torch(
    k: Tensor, calib_width: int, thresh: float, kernel_width: int, crop: float, ndim: int
) -> Tensor:
    """ESPIRiT for one k-space ``(C, *grid)`` in torch (any device); see :func:`espirit_maps`."""
    c = int(k.shape[0])
    grid = tuple(int(n) for n in k.shape[1:])
    kw, cw = int(kernel_width), int(calib_width)
    cdt = k.dtype
    # 1. calibration box and its block (Hankel-like) matrix: one row per kw^ndim patch, C*kw^ndim columns
    box = k[(slice(None), *(slice(n // 2 - cw // 2, n // 2 - cw // 2 + cw) for n in grid))]
    patches = box
    for d in range(1, ndim + 1):
        patches = patches.unfold(d, kw, 1)  # (C, nb..., kw...)
    nb = patches.shape[1 : 1 + ndim]
    perm = (*range(1, 1 + ndim), 0, *range(1 + ndim, 1 + 2 * ndim))
    mat = patches.permute(perm).reshape(math.prod(nb), c * kw**ndim)
    # 2. kernels: right singular vectors whose singular value exceeds thresh * max
    _, sv, vh = torch.linalg.svd(mat, full_matrices=False)
    kernels = vh[sv > thresh * sv.max()].reshape(-1, c, *(kw,) * ndim)
    # 3. image-domain kernel operator M(r) = Σ_k v_k(r) v_k(r)ᴴ with v_k = centred IFFT of the zero-padded
    #    kernel k. Expanding the product, M_cd(r) = N^(-1/2) · IFFTc[G_cd](r) where G_cd[Δ] =
    #    Σ_k Σ_j K_kc[j + Δ] conj(K_kd[j]) is the kernels' cross-correlation (lags |Δ| < kw), so only
    #    C² small correlations and C² image-size FFTs are needed, whatever the number of kernels.
    lag = 2 * kw - 1
    if any(n < lag for n in grid):
        raise InputDataError(f"espirit_maps: the grid {grid} must be at least 2*kernel_width-1 = {lag} wide")
    dims = tuple(range(2, 2 + ndim))
    fk = torch.fft.fftn(kernels, s=(lag,) * ndim, dim=dims)  # (K, C, lag...)
    letters = "xyz"[:ndim]
    g = torch.einsum(f"kc{letters},kd{letters}->cd{letters}", fk, fk.conj())
    g = torch.fft.fftshift(torch.fft.ifftn(g, dim=dims), dim=dims)  # lag 0 at index kw - 1
    padded = torch.zeros((c, c, *grid), dtype=cdt, device=k.device)
    padded[(slice(None), slice(None), *(slice(n // 2 - (kw - 1), n // 2 + kw) for n in grid))] = g
    n_vox = math.prod(grid)
    aha = _fft.ifftc(padded, ndim) * (math.sqrt(n_vox) / kw**ndim)  # N^(-1/2) · N / kw^d (sigpy's scaling)
    aha = aha.permute(*range(2, 2 + ndim), 0, 1)  # (*grid, C, C)
    # 4. per-voxel dominant eigenvector (Hermitian eigendecomposition, eigenvalues ascending)
    evals, evecs = torch.linalg.eigh(aha)
    lam = evals[..., -1]
    mps = evecs[..., -1]  # (*grid, C)
    # 5. remove the phase of coil 0, crop where the eigenvalue is below `crop`
    ref = mps[..., :1]
    mps = mps * (ref.conj() / ref.abs().clamp_min(torch.finfo(lam.dtype).tiny))
    mps = mps * (lam > crop).unsqueeze(-1)
    return mps.movedim(-1, 0).contiguous()


def espirit_maps(
    kspace: Tensor,
    calib_width: int = 24,
    thresh: float = 0.02,
    kernel_width: int = 6,
    crop: float = 0.95,
    max_iter: int = 100,
    ndim: int = 2,
    backend: str = "torch",
) -> Tensor:
    """ESPIRiT coil sensitivities estimated from the fully sampled k-space centre (Uecker et al. 2014).

    Per slice: the ``calib_width``-wide centre box gives a block matrix of all ``kernel_width``-wide
    patches; its right singular vectors with singular value > ``thresh``·max span the calibration
    kernels. In the image domain they define, at each voxel r, the C×C Hermitian matrix
    M(r) = N/kw^d · Σ_k v_k(r) v_k(r)ᴴ (v_k the centred inverse FFT of kernel k); the maps are its
    dominant eigenvector, kept where the eigenvalue exceeds ``crop`` (≈ 1 inside the object, so the
    background is masked). The maps satisfy Σ_c |S_c|² = 1 in the support and have the phase of coil 0
    removed (a relative phase, as usual for ESPIRiT).

    ``backend="torch"`` (default) computes this in torch on the k-space's device, with an exact
    eigendecomposition per voxel; ``backend="sigpy"`` calls ``sigpy.mri.app.EspiritCalib`` (power
    iteration, ``max_iter`` steps) on the CPU. The two agree inside the support (see the tests).

    Args:
        kspace: complex centred k-space ``(C, *grid)`` or a stack ``(S, C, *grid)`` (maps per slice);
            ``grid`` has ``ndim`` axes.
        calib_width: side of the calibration box; it must be fully sampled (in every coil).
        thresh: ESPIRiT singular-value threshold (sigpy's default).
        kernel_width: ESPIRiT kernel width (sigpy's default).
        crop: ESPIRiT eigenvalue crop threshold (sigpy's default).
        max_iter: power iterations (sigpy backend only).
        ndim: number of image axes (2, or 3 for a 3-D acquisition).
        backend: ``"torch"`` or ``"sigpy"``.

    Returns:
        complex64 maps with the shape of ``kspace``.

    Raises:
        InputDataError: wrong shape, or a calibration box with unsampled points.
        MissingDependencyError: ``backend="sigpy"`` without sigpy.
    """
    if backend not in ("torch", "sigpy"):
        raise InputDataError(f"espirit_maps: backend must be 'torch' or 'sigpy', found {backend!r}")
    k = torch.as_tensor(kspace)
    if not k.is_complex():
        raise InputDataError(f"espirit_maps: expected complex k-space, found dtype {k.dtype}")
    if k.ndim not in (ndim + 1, ndim + 2):
        raise InputDataError(
            f"espirit_maps: expected k-space of shape (C, *grid) or (S, C, *grid) with a "
            f"{ndim}-D grid, found shape {tuple(k.shape)}"
        )
    grid = tuple(k.shape[-ndim:])
    if calib_width > min(grid):
        raise InputDataError(f"espirit_maps: calib_width {calib_width} exceeds the k-space grid {grid}")
    sl = tuple(slice(n // 2 - calib_width // 2, n // 2 - calib_width // 2 + calib_width) for n in grid)
    box = k[(Ellipsis, *sl)].abs() > 0
    box = box.all(dim=-ndim - 1)  # sampled in every coil
    if not bool(box.all()):
        missing = int((~box).sum())
        raise InputDataError(
            f"espirit_maps: the central {calib_width}^{ndim} calibration box must be fully sampled, found "
            f"{missing} unsampled location(s); lower calib_width or sample a wider centre "
            "(center_fraction / calib)"
        )
    if kernel_width > calib_width:
        raise InputDataError(f"espirit_maps: kernel_width {kernel_width} exceeds calib_width {calib_width}")
    if backend == "torch":
        stack = k.detach().reshape(-1, *k.shape[-ndim - 1 :]).to(torch.complex64)
        maps = [_espirit_torch(ks, calib_width, thresh, kernel_width, crop, ndim) for ks in stack]
        return torch.stack(maps).reshape(k.shape)
    app = require("sigpy.mri.app", "mri")
    stack = k.reshape(-1, *k.shape[-ndim - 1 :]).detach().cpu().numpy().astype(np.complex64)
    out = []
    for ks in stack:
        mps = app.EspiritCalib(
            ks,
            calib_width=calib_width,
            thresh=thresh,
            kernel_width=kernel_width,
            crop=crop,
            max_iter=max_iter,
            show_pbar=False,
        ).run()
        out.append(np.asarray(mps))
    maps = torch.from_numpy(np.stack(out).astype(np.complex64)).reshape(k.shape)
    return maps.to(k.device)
