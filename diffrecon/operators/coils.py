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
    "fully_sampled_width",
    "auto_calibration_width",
    "calibration_region",
    "fully_sampled_box",
    "box_fully_sampled",
    "auto_kernel_width",
    "absorb_image_phase",
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


# --- calibration region and kernel size -------------------------------------------------------------------

#: ESPIRiT kernel width used when the calibration region allows it (sigpy's and BART's default).
DEFAULT_KERNEL_WIDTH = 6
#: Smallest useful kernel width: a width-1 kernel has no spatial extent, so M(r) is constant and the maps
#: carry no spatial sensitivity information.
MIN_KERNEL_WIDTH = 2
#: Smallest calibration width the default kernel rule accepts: width 2 needs 3·2 − 1 = 5 (see
#: :func:`auto_kernel_width`).
MIN_CALIB_WIDTH = 3 * MIN_KERNEL_WIDTH - 1
#: Largest calibration side derived from a mask (sigpy's and BART's default box; larger boxes cost more
#: and change the maps little).
MAX_CALIB_WIDTH = 24


def _centred(n: int, side: int) -> slice:
    """Indices of the centred length-``side`` window of an axis of length n (DC at n//2)."""
    start = n // 2 - side // 2
    return slice(start, start + side)


def _grid_mask(mask, ndim: int, where: str) -> Tensor:
    """Boolean mask sampled in every leading entry (slice): ``(*lead, *grid)`` → ``grid``; 1-D kept."""
    m = torch.as_tensor(mask)
    if m.is_complex():
        raise InputDataError(f"{where}: expected a real or boolean sampling mask, found dtype {m.dtype}")
    m = m != 0
    if m.ndim == 1 and ndim == 2:  # a fastMRI line mask (ky,): every kx row of a sampled line is sampled
        return m
    if m.ndim < ndim or 0 in m.shape:
        raise InputDataError(
            f"{where}: expected a mask of shape (*slices, {', '.join('n' * ndim)}) with a {ndim}-D grid, "
            f"found shape {tuple(m.shape)}"
        )
    return m.reshape(-1, *m.shape[-ndim:]).all(dim=0)


def _box_sampled(m: Tensor, sides: Sequence[int]) -> bool:
    return bool(m[tuple(_centred(n, s) for n, s in zip(m.shape, sides, strict=True))].all())


def fully_sampled_width(mask: Tensor | np.ndarray, ndim: int = 2) -> int:
    """Side of the largest fully sampled centred box of a sampling mask (0 if the DC point is unsampled).

    The box of side s covers indices ``n//2 - s//2 … n//2 - s//2 + s - 1`` of every grid axis (the
    convention of :func:`espirit_maps`); these boxes are nested (side s − 1 lies inside side s), so
    the answer is the first s whose box has an unsampled point, minus one. A location counts as sampled
    only if it is sampled in every slice of a per-slice mask.

    * 1-D Cartesian line mask ``(ky,)``: the number of contiguous centred lines.
    * 2-D mask ``(kx, ky)`` (or ``(S, kx, ky)``): the largest centred fully sampled square, at most
      ``min(kx, ky)``; for a line mask broadcast to the grid this is min(lines, kx).

    Args:
        mask: boolean (or 0/1) mask ``(ky,)``, ``(*slices, *grid)``.
        ndim: number of grid axes (2, or 3 for a 3-D acquisition).

    Returns:
        the side in samples (not capped; see :func:`auto_calibration_width`).

    Example:
        >>> import torch
        >>> m = torch.zeros(64, dtype=torch.bool); m[30:35] = True; m[::4] = True
        >>> fully_sampled_width(m)
        5
    """
    m = _grid_mask(mask, ndim, "fully_sampled_width")
    side, limit = 0, min(m.shape)
    while side < limit and _box_sampled(m, (side + 1,) * m.ndim):
        side += 1
    return side


def auto_calibration_width(
    mask: Tensor | np.ndarray, max_width: int | None = MAX_CALIB_WIDTH, ndim: int = 2
) -> int:
    """ESPIRiT calibration width derived from a mask: its fully sampled centre, capped at ``max_width``.

    This is :func:`fully_sampled_width` (1-D masks: the contiguous centre lines; 2-D: the largest
    centred fully sampled square) limited to ``max_width`` (default 24, the usual ESPIRiT box).

    Raises:
        InputDataError: the fully sampled centre is narrower than ``MIN_CALIB_WIDTH`` (5), the least
            the kernel rule of :func:`auto_kernel_width` accepts (0: no fully sampled centre at all).
    """
    side = fully_sampled_width(mask, ndim)
    if max_width is not None:
        side = min(side, int(max_width))
    if side < MIN_CALIB_WIDTH:
        found = "no fully sampled centre" if side == 0 else f"a fully sampled centre only {side} wide"
        raise InputDataError(
            f"ESPIRiT calibration: the sampling mask has {found}; ESPIRiT needs at least {MIN_CALIB_WIDTH} "
            "fully sampled centre lines: acquire a wider centre (simulate --center-fraction / --calib) "
            "or use stored coil maps (--maps stored)"
        )
    return side


def box_fully_sampled(mask: Tensor | np.ndarray, sides: Sequence[int], ndim: int = 2) -> bool:
    """Whether the centred box with these sides (one per grid axis, kx first) is sampled everywhere
    (in every slice of a per-slice mask); a box larger than the grid is not."""
    m = _grid_mask(mask, ndim, "box_fully_sampled")
    sides = [int(v) for v in sides]
    if m.ndim == 1:  # a line mask (ky,): rows are all sampled, only the ky side matters
        sides = sides[-1:]
    if len(sides) != m.ndim:
        raise InputDataError(f"box_fully_sampled: expected {m.ndim} sides, found {tuple(sides)}")
    if any(s < 1 or s > n for s, n in zip(sides, m.shape, strict=True)):
        return False
    return _box_sampled(m, sides)


def fully_sampled_box(
    mask: Tensor | np.ndarray, max_width: int | None = None, ndim: int = 2
) -> tuple[int, ...]:
    """Per-axis sides of the largest fully sampled centred box grown from the square (never raises).

    Starts from the square of :func:`fully_sampled_width` (capped at ``max_width``) and widens it along
    each grid axis in turn (kx first) while the box stays fully sampled, up to ``min(n, max_width)``.
    For a 1-D Cartesian mask broadcast to ``(kx, ky)`` (every kx row of a sampled line is sampled) this
    is ``(min(kx, max_width), lines)``. All zeros when the DC point is unsampled.

    Args:
        mask: boolean mask on the full grid, ``(*slices, *grid)``.
        max_width: cap on every side (None: no cap).
        ndim: number of grid axes.
    """
    m = _grid_mask(mask, ndim, "fully_sampled_box")
    if m.ndim < ndim:
        raise InputDataError(
            f"fully_sampled_box: expected a mask on the {ndim}-D k-space grid, found shape {tuple(m.shape)}; "
            "broadcast a line mask (ky,) to (kx, ky) first"
        )
    side = fully_sampled_width(m, ndim)
    if max_width is not None:
        side = min(side, int(max_width))
    sides = [side] * ndim
    if side == 0:
        return tuple(sides)
    for a, n in enumerate(m.shape):
        limit = n if max_width is None else min(n, int(max_width))
        while sides[a] < limit and _box_sampled(m, [s + (i == a) for i, s in enumerate(sides)]):
            sides[a] += 1
    return tuple(sides)


def calibration_region(
    mask: Tensor | np.ndarray, max_width: int | None = MAX_CALIB_WIDTH, ndim: int = 2
) -> tuple[int, ...]:
    """Per-axis sides of the calibration box :func:`espirit_maps` uses by default: :func:`fully_sampled_box`
    capped at 24, after :func:`auto_calibration_width` checked the square is wide enough.

    A 1-D line mask calibrates on ``min(kx, 24) × lines`` samples rather than ``lines × lines``, which
    ESPIRiT needs when few lines are fully sampled: a 64² grid with 5 centre lines gives a 24×5 box and
    (kernel 6×2) a calibration matrix of 19·4 = 76 rows instead of 4·4 = 16 from a 5×5 box with 2×2.
    Measured on the bundled 64³ head (8 coils, 4×, equispaced lines, 12 slices): CG-SENSE 23.2 dB with
    the 24×5 maps, 24.5 dB with the true maps, 10.7 dB from the 5×5 box. A 2-D mask with a square
    calibration box gives that square.

    Args:
        mask: boolean mask on the full grid, ``(*slices, *grid)`` (a 1-D ``(ky,)`` mask has no kx size:
            broadcast it to ``(kx, ky)`` first).
        max_width: cap on every side (None: no cap).
        ndim: number of grid axes.

    Returns:
        the sides ``(c_0, …, c_{ndim-1})`` in samples.

    Raises:
        InputDataError: as :func:`auto_calibration_width`, or a 1-D mask.
    """
    box = fully_sampled_box(mask, max_width, ndim)
    auto_calibration_width(mask, max_width, ndim)  # raises when the square is too small
    return box


def auto_kernel_width(
    calib_width: int | Sequence[int], max_width: int = DEFAULT_KERNEL_WIDTH
) -> int | tuple[int, ...]:
    """ESPIRiT kernel width for a calibration width: k = min(6, ⌊(c + 1)/3⌋) per axis.

    Why: along an axis with calibration side c a kernel of width k fits at c − k + 1 shifts; the
    calibration matrix has Π(c_a − k_a + 1) rows (patches) and C·Π k_a columns, and its row space must
    be estimated from the data, not fixed by a lack of rows. The rule asks for at least 2k shifts per
    axis, c − k + 1 ≥ 2k ⇔ k ≤ (c + 1)/3, and keeps the usual 6 once c ≥ 17 (so the classic 24² box
    keeps kernel 6, 19 shifts). Measured on the bundled 64³ head (8 coils, 4×, CG-SENSE with the ESPIRiT
    maps; true maps 24.5–25.5 dB): c = 5 → k = 2 gives 23.2 dB and k = 3 (3 shifts) 14 dB; c = 8 →
    k = 3 gives 24.8 dB, k = 5 (4 shifts) 9 dB; c ≥ 12 → k = 4…6 all within 0.6 dB of each other.
    :func:`espirit_maps` refuses kernels with fewer than k shifts (2k − 1 > c) and k < 2.

    Args:
        calib_width: one side, or one side per axis.
        max_width: the kernel width used when the calibration allows it (6).

    Returns:
        an int for an int, a tuple for a sequence.

    Raises:
        InputDataError: a side below ``MIN_CALIB_WIDTH`` (5), which would give k < 2.
    """
    scalar = isinstance(calib_width, (int, np.integer))
    sides = (int(calib_width),) if scalar else tuple(int(c) for c in calib_width)
    small = [c for c in sides if (c + 1) // 3 < MIN_KERNEL_WIDTH]
    if small:
        raise InputDataError(
            f"ESPIRiT: calibration width {small[0]} is too small for the automatic kernel width "
            f"min(6, (c+1)//3); it needs at least {MIN_CALIB_WIDTH}: widen the fully sampled centre, or "
            f"give a kernel width of {MIN_KERNEL_WIDTH} explicitly (--kernel-width) if the box is >= "
            f"{2 * MIN_KERNEL_WIDTH - 1}"
        )
    widths = tuple(min(int(max_width), (c + 1) // 3) for c in sides)
    return widths[0] if scalar else widths


def _per_axis(value, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * ndim
    sides = tuple(int(v) for v in value)
    if len(sides) != ndim:
        raise InputDataError(f"espirit_maps: {name} needs one int or {ndim} ints, found {tuple(value)}")
    return sides


def _label(sides: Sequence[int]) -> str:
    return "x".join(str(s) for s in sides)


def _espirit_torch(
    k: Tensor, calib: tuple[int, ...], thresh: float, kernel: tuple[int, ...], crop: float, ndim: int
) -> Tensor:
    """ESPIRiT for one k-space ``(C, *grid)`` in torch (any device); see :func:`espirit_maps`.

    ``calib`` and ``kernel`` hold one side per grid axis."""
    c = int(k.shape[0])
    grid = tuple(int(n) for n in k.shape[1:])
    cdt = k.dtype
    kv = math.prod(kernel)
    # 1. calibration box and its block (Hankel-like) matrix: one row per kernel-sized patch,
    #    C * Π kernel columns
    patches = k[(slice(None), *(_centred(n, s) for n, s in zip(grid, calib, strict=True)))]
    for d in range(ndim):
        patches = patches.unfold(d + 1, kernel[d], 1)  # (C, nb..., kernel...)
    nb = patches.shape[1 : 1 + ndim]
    perm = (*range(1, 1 + ndim), 0, *range(1 + ndim, 1 + 2 * ndim))
    mat = patches.permute(perm).reshape(math.prod(nb), c * kv)
    # 2. kernels: right singular vectors whose singular value exceeds thresh * max
    _, sv, vh = torch.linalg.svd(mat, full_matrices=False)
    kernels = vh[sv > thresh * sv.max()].reshape(-1, c, *kernel)
    # 3. image-domain kernel operator M(r) = Σ_k v_k(r) v_k(r)ᴴ with v_k = centred IFFT of the zero-padded
    #    kernel k. Expanding the product, M_cd(r) = N^(-1/2) · IFFTc[G_cd](r) where G_cd[Δ] =
    #    Σ_k Σ_j K_kc[j + Δ] conj(K_kd[j]) is the kernels' cross-correlation (lags |Δ_a| < kernel_a), so only
    #    C² small correlations and C² image-size FFTs are needed, whatever the number of kernels.
    lags = tuple(2 * w - 1 for w in kernel)
    dims = tuple(range(2, 2 + ndim))
    fk = torch.fft.fftn(kernels, s=lags, dim=dims)  # (K, C, lags...)
    letters = "xyz"[:ndim]
    g = torch.einsum(f"kc{letters},kd{letters}->cd{letters}", fk, fk.conj())
    g = torch.fft.fftshift(torch.fft.ifftn(g, dim=dims), dim=dims)  # lag 0 at index kernel_a - 1
    padded = torch.zeros((c, c, *grid), dtype=cdt, device=k.device)
    centre = tuple(slice(n // 2 - (w - 1), n // 2 + w) for n, w in zip(grid, kernel, strict=True))
    padded[(slice(None), slice(None), *centre)] = g
    n_vox = math.prod(grid)
    aha = _fft.ifftc(padded, ndim) * (math.sqrt(n_vox) / kv)  # N^(-1/2) · N / Π kernel (sigpy's scaling)
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
    calib_width: int | Sequence[int] | None = None,
    thresh: float = 0.02,
    kernel_width: int | Sequence[int] | None = None,
    crop: float = 0.95,
    max_iter: int = 100,
    ndim: int = 2,
    backend: str = "torch",
) -> Tensor:
    """ESPIRiT coil sensitivities estimated from the fully sampled k-space centre (Uecker et al. 2014).

    Per slice: the centred calibration box (sides ``calib_width``) gives a block matrix of all
    kernel-sized patches (sides ``kernel_width``); its right singular vectors with singular value
    > ``thresh``·max span the calibration kernels. In the image domain they define, at each voxel r,
    the C×C Hermitian matrix M(r) = N/Π k_a · Σ_k v_k(r) v_k(r)ᴴ (v_k the centred inverse FFT of kernel
    k); the maps are its dominant eigenvector, kept where the eigenvalue exceeds ``crop`` (≈ 1 inside
    the object, so the background is masked). The maps satisfy Σ_c |S_c|² = 1 in the support and have
    the phase of coil 0 removed (a relative phase, as usual for ESPIRiT).

    Defaults adapt to the data: ``calib_width=None`` takes :func:`calibration_region` of the sampled
    pattern (locations non-zero in every coil and slice): the fully sampled centre, at most 24 per
    axis (24×24 when the centre allows, ``24×lines`` for a 1-D line mask with fewer lines).
    ``kernel_width=None`` takes :func:`auto_kernel_width` of the calibration sides, min(6, ⌊(c+1)/3⌋)
    per axis (6 for the 24² box).

    ``backend="torch"`` (default) computes this in torch on the k-space's device, with an exact
    eigendecomposition per voxel; ``backend="sigpy"`` calls ``sigpy.mri.app.EspiritCalib`` (power
    iteration, ``max_iter`` steps, square boxes and kernels only) on the CPU. The two agree inside the
    support (see the tests).

    Args:
        kspace: complex centred k-space ``(C, *grid)`` or a stack ``(S, C, *grid)`` (maps per slice);
            ``grid`` has ``ndim`` axes.
        calib_width: side of the calibration box, one int (a square/cube) or one per axis, or None
            (derived, see above); the box must be fully sampled (in every coil).
        thresh: ESPIRiT singular-value threshold (sigpy's default).
        kernel_width: ESPIRiT kernel width, one int or one per axis, or None (derived); each side k
            needs 2 ≤ k and 2k − 1 ≤ the calibration side (at least k patch shifts).
        crop: ESPIRiT eigenvalue crop threshold (sigpy's default).
        max_iter: power iterations (sigpy backend only).
        ndim: number of image axes (2, or 3 for a 3-D acquisition).
        backend: ``"torch"`` or ``"sigpy"``.

    Returns:
        complex64 maps with the shape of ``kspace``.

    Raises:
        InputDataError: wrong shape, a calibration box with unsampled points, a fully sampled centre
            too small for ESPIRiT, or a kernel width that does not fit the calibration box.
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
    grid = tuple(int(n) for n in k.shape[-ndim:])

    def sampled() -> Tensor:  # the locations sampled (non-zero) in every coil and slice
        return (k != 0).reshape(-1, *grid).all(dim=0)

    if calib_width is None:
        calib = calibration_region(sampled(), ndim=ndim)
    else:
        calib = _per_axis(calib_width, ndim, "calib_width")
        if min(calib) < 1 or any(c > n for c, n in zip(calib, grid, strict=True)):
            raise InputDataError(
                f"espirit_maps: calib_width {_label(calib)} must be positive and fit the k-space grid "
                f"{_label(grid)}"
            )
        box = k[(Ellipsis, *(_centred(n, s) for n, s in zip(grid, calib, strict=True)))] != 0
        box = box.reshape(-1, *calib).all(dim=0)
        if not bool(box.all()):
            raise InputDataError(
                f"espirit_maps: the central {_label(calib)} calibration box must be fully sampled, found "
                f"{int((~box).sum())} unsampled location(s); the fully sampled centre is "
                f"{fully_sampled_width(sampled(), ndim)} wide: lower calib_width, pass calib_width=None "
                "(derived from the data) or sample a wider centre (center_fraction / calib)"
            )
    if kernel_width is None:
        kernel = auto_kernel_width(calib)
    else:
        kernel = _per_axis(kernel_width, ndim, "kernel_width")
    if any(kw < MIN_KERNEL_WIDTH or 2 * kw - 1 > cw for kw, cw in zip(kernel, calib, strict=True)):
        raise InputDataError(
            f"espirit_maps: kernel_width {_label(kernel)} does not fit the {_label(calib)} calibration box: "
            f"each side k needs {MIN_KERNEL_WIDTH} <= k <= (c+1)//2 (at least k patch shifts), here at most "
            f"{_label([(c + 1) // 2 for c in calib])}; lower it (--kernel-width) or omit it (derived)"
        )
    if backend == "torch":
        stack = k.detach().reshape(-1, *k.shape[-ndim - 1 :]).to(torch.complex64)
        maps = [_espirit_torch(ks, calib, thresh, kernel, crop, ndim) for ks in stack]
        return torch.stack(maps).reshape(k.shape)
    if len(set(calib)) != 1 or len(set(kernel)) != 1:
        raise InputDataError(
            f"espirit_maps: backend='sigpy' takes a square calibration box and kernel, found "
            f"{_label(calib)} and {_label(kernel)}; pass int calib_width/kernel_width or use backend='torch'"
        )
    app = require("sigpy.mri.app", "mri")
    stack = k.reshape(-1, *k.shape[-ndim - 1 :]).detach().cpu().numpy().astype(np.complex64)
    out = []
    for ks in stack:
        mps = app.EspiritCalib(
            ks,
            calib_width=calib[0],
            thresh=thresh,
            kernel_width=kernel[0],
            crop=crop,
            max_iter=max_iter,
            show_pbar=False,
        ).run()
        out.append(np.asarray(mps))
    maps = torch.from_numpy(np.stack(out).astype(np.complex64)).reshape(k.shape)
    return maps.to(k.device)


def absorb_image_phase(
    maps: Tensor, kspace: Tensor, calib_width: int | Sequence[int], ndim: int = 2
) -> Tensor:
    """Coil maps with the object's low-resolution phase multiplied in, so the object is ≈ real and ≥ 0.

    ESPIRiT determines the maps only up to one phase per voxel (that of coil 0 is removed), so in
    their basis the object is z = |x|·e^{iθ(r)}, a complex image. Priors and solvers that work on real
    magnitude images (``MultiCoilMRI(..., real_input=True)``, the diffusion methods) need a basis in
    which the object is real. θ is smooth and is measured from the fully sampled centre alone:

        x_lr(r) = Σ_c conj(S_c(r)) · F⁻¹[w ⊙ y_c](r),      S'_c(r) = S_c(r) · x_lr(r) / |x_lr(r)|,

    with w a separable Hann window over the centred calibration box (zero outside it, so x_lr is a
    low-resolution, unaliased image). Then (F S'_c |x|) ≈ y_c, i.e. |x| is a real, non-negative
    solution. Voxels where x_lr or the maps vanish keep their maps unchanged.

    Args:
        maps: complex ``(C, *grid)`` or ``(S, C, *grid)`` (e.g. from :func:`espirit_maps`).
        kspace: centred k-space of the same shape (or ``(S, C, *grid)`` with shared maps ``(C, *grid)``).
        calib_width: the fully sampled calibration box, one side or one per axis.
        ndim: number of grid axes.

    Returns:
        maps with the dtype of ``maps`` and the shape of ``kspace`` (per-slice maps for a stack: the
        phase differs by slice), with Σ_c |S'_c|² = Σ_c |S_c|² (only phases change).
    """
    k = torch.as_tensor(kspace)
    s = torch.as_tensor(maps)
    if not (k.is_complex() and s.is_complex()) or tuple(k.shape[-ndim - 1 :]) != tuple(s.shape[-ndim - 1 :]):
        raise InputDataError(
            f"absorb_image_phase: expected complex maps and k-space on the same (C, *grid), found "
            f"{tuple(s.shape)} {s.dtype} and {tuple(k.shape)} {k.dtype}"
        )
    grid = tuple(int(n) for n in k.shape[-ndim:])
    calib = _per_axis(calib_width, ndim, "calib_width")
    rdt = k.real.dtype
    window = torch.ones(grid, dtype=rdt, device=k.device)
    for a, (n, c) in enumerate(zip(grid, calib, strict=True)):
        w = torch.zeros(n, dtype=rdt, device=k.device)
        w[_centred(n, c)] = torch.hann_window(c + 2, periodic=False, dtype=rdt, device=k.device)[1:-1]
        window = window * w.view(*(n if i == a else 1 for i in range(ndim)))
    low = (s.conj() * _fft.ifftc(k * window, ndim)).sum(dim=-ndim - 1, keepdim=True)
    mag = low.abs()
    phase = torch.where(mag > 0, low / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(low))
    return (s * phase).to(s.dtype)
