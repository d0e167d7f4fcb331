"""MRI forward models, k-space sampling masks and coil sensitivity maps.

Forward model (Cartesian SENSE). For an image x on a grid G = (H, W) (or (D, H, W) in 3D), coil
sensitivities S_c and a sampling mask M on the k-space grid,

    (A x)_c = M ⊙ F(S_c ⊙ x),        Aᴴ y = Σ_c conj(S_c) ⊙ Fᴴ(M ⊙ y_c),

where F is the **centred, orthonormal** DFT over the grid axes: the DC sample is at index n//2 of each
k-space axis, the image centre at index n//2, and ‖F x‖ = ‖x‖ (unitary; Fᴴ = F⁻¹). This is the
convention of fastMRI (``fft2c``) and sigpy (``sp.fft(..., center=True)``), so ``MultiCoilMRI`` agrees
with ``sigpy.mri.linop.Sense`` to float32 rounding. With coil maps normalised to Σ_c |S_c|² = 1 and a
binary mask, ‖A‖ ≤ 1 and a fully sampled A is an isometry.

Shapes (leading batch dimensions ``...`` pass through untouched):

=====================  ======================  ==========================
operator               image (domain)          k-space (range)
=====================  ======================  ==========================
MultiCoilMRI, maps     ``(..., H, W)``         ``(..., C, H, W)``
``(C, H, W)``
MultiCoilMRI, maps     ``(..., S, H, W)``      ``(..., S, C, H, W)``
``(S, C, H, W)``
SingleCoilMRI          ``(..., H, W)``         ``(..., H, W)``
MultiCoilMRI3D         ``(..., D, H, W)``      ``(..., C, D, H, W)``
NonCartesianMRI        ``(..., H, W)``         ``(..., C, *traj)``
=====================  ======================  ==========================

Real-valued images. MR images are complex; by default the domain is complex (``complex64``; real
input is promoted). Pass ``real_input=True`` for a real domain (e.g. magnitude images as in
DiffusionMBIR): then the forward map is x ↦ A x for real x and the adjoint is **Re(Aᴴ y)**, which is
the exact adjoint of A restricted to real images in the real inner product ⟨a, b⟩ = Re Σ conj(a)·b.

Masks are boolean tensors on the k-space grid returned together with their realised acceleration
(:class:`SamplingMask`); every generator is seeded and reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import InputDataError, require
from . import _fft
from .base import LinearOperator

Tensor = torch.Tensor

__all__ = [
    "MultiCoilMRI",
    "SingleCoilMRI",
    "MultiCoilMRI3D",
    "NonCartesianMRI",
    "SamplingMask",
    "uniform1d_mask",
    "gaussian1d_mask",
    "equispaced1d_mask",
    "poisson2d_mask",
    "radial_mask",
    "radial_trajectory",
    "birdcage_maps",
    "espirit_maps",
    "rss",
    "fftc",
    "ifftc",
]

fftc = _fft.fftc
ifftc = _fft.ifftc


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


def _real_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def rss(coil_images: Tensor, coil_axis: int = -3) -> Tensor:
    """Root-sum-of-squares coil combination: sqrt(Σ_c |x_c|²) along ``coil_axis`` (real output)."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=coil_axis))


# ------------------------------------------------------------------------------------------------
# Cartesian operators
# ------------------------------------------------------------------------------------------------
def _normalise_mask(mask, grid, n_slices, name):
    """Return the mask as a bool tensor broadcastable over k-space, and the (possibly new) slice count.

    Accepted: the grid shape (or any shape broadcasting to it, e.g. ``(1, W)``), a 1-D ``(W,)`` column
    mask (fastMRI style, 2-D only), or a per-slice ``(S, *grid)`` mask.
    """
    nd = len(grid)
    m = torch.as_tensor(mask)
    if m.is_complex():
        raise InputDataError(f"{name}: expected a real or boolean mask, found dtype {m.dtype}")
    if not bool(torch.isfinite(m.to(torch.float64)).all()):
        raise InputDataError(f"{name}: expected finite mask values, found NaN or Inf")
    if m.ndim == 1 and nd == 2:
        m = m.unsqueeze(0)
    if m.ndim not in (nd, nd + 1):
        raise InputDataError(
            f"{name}: expected a mask of shape {grid} (or (W,), or per-slice (S, *grid)), "
            f"found shape {tuple(m.shape)}"
        )
    trail = tuple(m.shape[-nd:])
    if any(a != b and a != 1 for a, b in zip(trail, grid, strict=True)):
        raise InputDataError(f"{name}: mask shape {tuple(m.shape)} does not match the k-space grid {grid}")
    if m.ndim == nd + 1:
        s = int(m.shape[0])
        if n_slices is not None and s != n_slices:
            raise InputDataError(f"{name}: per-slice mask has {s} slices but the coil maps have {n_slices}")
        n_slices = s
        m = m.expand(s, *grid)
    else:
        m = m.expand(*grid)
    if m.dtype != torch.bool:
        if bool(((m != 0) & (m != 1)).any()):
            m = m.to(torch.float32)  # a weighting, kept as-is
        else:
            m = m != 0
    if not bool((m != 0).any()):
        raise InputDataError(f"{name}: expected at least one sampled k-space location, found an empty mask")
    m = m.contiguous()
    return m, n_slices


class _CartesianMRI(LinearOperator):
    """Shared machinery of the Cartesian operators (masked centred FFT of coil-weighted images).

    Internally the even-size centring modulation (see :mod:`diffrecon.operators._fft`) is folded into
    ``_pre`` (coil maps times a checkerboard) and ``_post`` (mask times a signed checkerboard), so one
    application costs one multiply by the maps, one FFT and one multiply by the mask.
    """

    custom_autograd = True

    def __init__(
        self,
        maps: Tensor | None,
        mask: Tensor,
        fft_ndim: int,
        real_input: bool,
        image_shape: Sequence[int] | None = None,
        n_slices: int | None = None,
    ):
        name = type(self).__name__
        nd = int(fft_ndim)
        requested_slices = None if n_slices is None else int(n_slices)

        if maps is not None:
            maps = torch.as_tensor(maps)
            if not maps.is_complex():
                maps = maps.to(torch.complex64)
            if maps.dtype not in (torch.complex64, torch.complex128):
                raise InputDataError(f"{name}: expected complex coil maps, found dtype {maps.dtype}")
            allowed = (nd + 1, nd + 2) if nd == 2 else (nd + 1,)
            if maps.ndim not in allowed:
                want = "(C, H, W) or per-slice (S, C, H, W)" if nd == 2 else "(C, D, H, W)"
                raise InputDataError(
                    f"{name}: expected coil maps of shape {want}, found shape {tuple(maps.shape)}"
                )
            if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
                raise InputDataError(f"{name}: expected finite coil maps, found NaN or Inf")
            grid = tuple(maps.shape[-nd:])
            n_coils = int(maps.shape[-nd - 1])
            n_slices = int(maps.shape[0]) if maps.ndim == nd + 2 else None
        else:
            if image_shape is None:
                mshape = tuple(torch.as_tensor(mask).shape)
                if len(mshape) < nd:
                    raise InputDataError(
                        f"{name}: give image_shape, or a mask with the full {nd}-D k-space grid; "
                        f"found mask shape {mshape}"
                    )
                image_shape = mshape[-nd:]
            grid = tuple(int(s) for s in image_shape)[-nd:]
            n_coils = None
            n_slices = None

        if requested_slices is not None:
            if n_slices is not None and n_slices != requested_slices:
                raise InputDataError(
                    f"{name}: n_slices={requested_slices} but the coil maps have {n_slices} slices"
                )
            n_slices = requested_slices
        mask_t, n_slices = _normalise_mask(mask, grid, n_slices, name)
        # everything lives where the coil maps are (a CPU mask with CUDA maps is moved there)
        device = maps.device if maps is not None else mask_t.device
        mask_t = mask_t.to(device)
        # shared maps (C, *grid) with a slice axis in the domain broadcast over it; no copy is made
        lead = (n_slices,) if n_slices is not None else ()
        coil = (n_coils,) if n_coils is not None else ()
        super().__init__((*lead, *grid), (*lead, *coil, *grid))
        self.fft_ndim = nd
        self.real_input = bool(real_input)
        self.grid = grid
        self.n_coils = n_coils
        self.n_slices = n_slices

        self._shift = not _fft.all_even(grid)
        # user-facing buffers
        self.register_buffer("maps", None if maps is None else maps.contiguous())
        self.register_buffer("mask", mask_t)
        # internal buffers with the centring modulation folded in
        if self._shift:
            pre = maps
            post = mask_t.to(torch.float32)
        else:
            chk = _fft.checkerboard(grid, dtype=torch.float32, device=device)
            pre = chk if maps is None else maps * chk.to(maps.dtype)
            post = mask_t.to(torch.float32) * (_fft.shift_sign(grid) * chk)
        self.register_buffer("_pre", None if pre is None else pre.contiguous(), persistent=False)
        self.register_buffer("_post", post.contiguous(), persistent=False)
        self.register_buffer("_post_sq", (post * post).contiguous(), persistent=False)

    # -- core -------------------------------------------------------------------------------------------
    def _coil_dim(self) -> int:
        return -self.fft_ndim - 1

    def _post_view(self, t: Tensor) -> Tensor:
        # per-slice masks (S, *grid) need a coil axis inserted to broadcast over (S, C, *grid)
        if self.n_coils is not None and t.ndim == self.fft_ndim + 1:
            return t.unsqueeze(1)
        return t

    def _to_complex(self, x: Tensor) -> Tensor:
        return x if x.is_complex() else x.to(_complex_of(x.dtype))

    def _fwd_core(self, x: Tensor, post: Tensor) -> Tensor:
        nd = self.fft_ndim
        x = self._to_complex(x)
        cdt = x.dtype
        if self.n_coils is not None:
            z = x.unsqueeze(self._coil_dim()) * self._pre.to(cdt)
        elif self._pre is not None:
            z = x * self._pre.to(_real_of(cdt))
        else:
            z = x
        dims = tuple(range(z.ndim - nd, z.ndim))
        if self._shift:
            z = torch.fft.ifftshift(z, dim=dims)
        z = torch.fft.fftn(z, dim=dims, norm="ortho")
        if self._shift:
            z = torch.fft.fftshift(z, dim=dims)
        return z.mul_(self._post_view(post).to(_real_of(cdt)))

    def _adj_core(self, y: Tensor, post: Tensor | None) -> Tensor:
        nd = self.fft_ndim
        y = self._to_complex(y)
        cdt = y.dtype
        z = y * self._post_view(post).to(_real_of(cdt)) if post is not None else y
        dims = tuple(range(z.ndim - nd, z.ndim))
        if self._shift:
            z = torch.fft.ifftshift(z, dim=dims)
        z = torch.fft.ifftn(z, dim=dims, norm="ortho")
        if self._shift:
            z = torch.fft.fftshift(z, dim=dims)
        if self.n_coils is not None:
            z = z.mul_(self._pre.to(cdt).conj()).sum(dim=self._coil_dim())
        elif self._pre is not None:
            z = z.mul_(self._pre.to(_real_of(cdt)))
        if self.real_input:
            return torch.real(z).contiguous()
        return z

    def _forward(self, x: Tensor) -> Tensor:
        return self._fwd_core(x, self._post)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._adj_core(y, self._post)

    def forward(self, x: Tensor) -> Tensor:
        """Image ``(..., *in_shape)`` → masked k-space ``(..., *out_shape)`` (complex)."""
        if self.real_input:
            if x.is_complex():
                raise InputDataError(
                    f"{type(self).__name__}(real_input=True): expected a real image, found dtype "
                    f"{x.dtype}; build the operator with real_input=False for complex images"
                )
        elif isinstance(x, Tensor) and not x.is_complex():
            x = x.to(_complex_of(x.dtype))  # differentiable promotion: its backward takes the real part
        return super().forward(x)

    def normal(self, x: Tensor) -> Tensor:
        """AᴴA x with the mask applied once (|M|²), one forward and one inverse FFT."""
        if torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad:
            return self.adjoint(self.forward(x))
        self._check(x, self.in_shape, "input")
        if self.real_input and x.is_complex():
            raise InputDataError(
                f"{type(self).__name__}(real_input=True): expected a real image, found {x.dtype}"
            )
        return self._adj_core(self._fwd_core(x, self._post_sq), None)

    @property
    def acceleration(self) -> float:
        """Realised acceleration of the mask: (number of k-space grid points) / (number sampled)."""
        m = self.mask
        return float(m.numel() / max(float((m != 0).sum()), 1.0))

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_shape={self.out_shape}, coils={self.n_coils}, "
            f"acceleration={self.acceleration:.3f}, real_input={self.real_input}"
        )


class MultiCoilMRI(_CartesianMRI):
    """Multi-coil Cartesian 2D SENSE operator: (A x)_c = M ⊙ F₂(S_c ⊙ x).

    F₂ is the centred orthonormal 2D DFT over the last two axes (see the module docstring); the mask
    M samples the k-space grid (kx = H rows, ky = W columns; a fastMRI column mask is ``(W,)``).

    Args:
        maps: complex coil sensitivities, ``(C, H, W)`` shared by all slices, or ``(S, C, H, W)`` per
            slice (then the image is ``(..., S, H, W)``). Real maps are promoted to complex64.
        mask: sampling mask (bool or real weights): ``(H, W)``, ``(W,)``, anything broadcasting to
            ``(H, W)``, or per-slice ``(S, H, W)``.
        real_input: real image domain, adjoint Re(Aᴴ y) (see the module docstring).
        n_slices: give shared maps ``(C, H, W)`` and a shared mask a slice axis S in the domain, so a
            stack ``(S, H, W)`` is one operand (needed for regularisers across slices); the maps are
            broadcast, not copied.

    Shapes:
        image ``(..., H, W)`` or ``(..., S, H, W)`` → k-space ``(..., C, H, W)`` or ``(..., S, C, H, W)``.

    Example::

        >>> from diffrecon.operators.mri import MultiCoilMRI, birdcage_maps, uniform1d_mask
        >>> maps = birdcage_maps((8, 64, 64))
        >>> mask, accel = uniform1d_mask((64, 64), acceleration=4, center_fraction=0.08, seed=0)
        >>> A = MultiCoilMRI(maps, mask)
        >>> k = A(torch.randn(3, 64, 64, dtype=torch.complex64))   # (3, 8, 64, 64)
    """

    def __init__(self, maps: Tensor, mask: Tensor, real_input: bool = False, n_slices: int | None = None):
        if maps is None:
            raise InputDataError(
                "MultiCoilMRI: expected coil maps, found None (use SingleCoilMRI for one coil)"
            )
        super().__init__(maps, mask, fft_ndim=2, real_input=real_input, n_slices=n_slices)


class SingleCoilMRI(_CartesianMRI):
    """Single-coil Cartesian 2D MRI: A x = M ⊙ F₂ x (no coil axis).

    Args:
        mask: ``(H, W)`` (or per-slice ``(S, H, W)``); a ``(W,)`` column mask needs ``image_shape``.
        image_shape: ``(H, W)``, required when the mask does not carry the full grid.
        real_input: real image domain, adjoint Re(Fᴴ(M ⊙ y)).

    Shapes: image ``(..., H, W)`` → k-space ``(..., H, W)``.
    """

    def __init__(self, mask: Tensor, image_shape: Sequence[int] | None = None, real_input: bool = False):
        super().__init__(None, mask, fft_ndim=2, real_input=real_input, image_shape=image_shape)


class MultiCoilMRI3D(_CartesianMRI):
    """Multi-coil 3D Cartesian SENSE: (A x)_c = M ⊙ F₃(S_c ⊙ x) with the centred orthonormal 3D DFT.

    For 3D acquisitions (one readout axis, two phase-encode axes). The mask lives on the full
    ``(D, H, W)`` k-space grid; a phase-encode pattern that is constant along the readout broadcasts,
    e.g. a :func:`poisson2d_mask` of shape ``(D, H)`` given as ``mask[..., None]`` with readout along W.

    Args:
        maps: complex coil sensitivities ``(C, D, H, W)``.
        mask: broadcastable to ``(D, H, W)``.
        real_input: real image domain, adjoint Re(Aᴴ y).

    Shapes: image ``(..., D, H, W)`` → k-space ``(..., C, D, H, W)``.
    """

    def __init__(self, maps: Tensor, mask: Tensor, real_input: bool = False):
        if maps is None:
            raise InputDataError("MultiCoilMRI3D: expected coil maps (C, D, H, W), found None")
        super().__init__(maps, mask, fft_ndim=3, real_input=real_input)


# ------------------------------------------------------------------------------------------------
# Non-Cartesian (NUFFT through sigpy)
# ------------------------------------------------------------------------------------------------
class NonCartesianMRI(LinearOperator):
    """Multi-coil non-Cartesian MRI through sigpy's NUFFT (optional extra ``diffrecon[mri]``).

    (A x)_c[k] = Σ_r S_c[r] x[r] exp(−2πi ⟨κ_k, r⟩ / N) / sqrt(Π N), approximated by sigpy's
    Kaiser–Bessel gridding NUFFT; the adjoint is sigpy's ``nufft_adjoint`` with the same kernel, so the
    pair is matched to rounding. κ are k-space coordinates in **cycles per field of view**
    (grid units), in [−N/2, N/2) along each axis, last axis ordered like the image axes (kx ↔ H, ky ↔ W).

    Runs on the CPU (tensors on another device are copied to the host and back: convenient, not fast).

    Args:
        coord: ``(*traj, 2)`` float coordinates, e.g. from :func:`radial_trajectory`.
        maps: ``(C, H, W)`` coil maps, or ``None`` for single coil (then no coil axis in k-space).
        image_shape: ``(H, W)`` when ``maps`` is None.
        oversamp: sigpy NUFFT grid oversampling factor.
        width: sigpy NUFFT interpolation kernel width.
        real_input: real image domain, adjoint Re(Aᴴ y).

    Shapes: image ``(..., H, W)`` → k-space ``(..., C, *traj)`` (or ``(..., *traj)`` single coil).

    Raises:
        MissingDependencyError: when sigpy is not installed.
    """

    custom_autograd = True

    def __init__(
        self,
        coord: Tensor,
        maps: Tensor | None = None,
        image_shape: Sequence[int] | None = None,
        oversamp: float = 1.25,
        width: int = 4,
        real_input: bool = False,
    ):
        require("sigpy", "mri")  # fail early, with the extra to install
        coord = torch.as_tensor(coord, dtype=torch.float64)
        if coord.ndim < 2 or coord.shape[-1] != 2:
            raise InputDataError(
                f"NonCartesianMRI: expected coordinates of shape (..., 2), found {tuple(coord.shape)}"
            )
        if maps is not None:
            maps = (
                torch.as_tensor(maps).to(torch.complex64)
                if not torch.as_tensor(maps).is_complex()
                else torch.as_tensor(maps)
            )
            if maps.ndim != 3:
                raise InputDataError(f"NonCartesianMRI: expected maps (C, H, W), found {tuple(maps.shape)}")
            grid = tuple(maps.shape[-2:])
        elif image_shape is not None:
            grid = tuple(int(s) for s in image_shape)
        else:
            raise InputDataError("NonCartesianMRI: give coil maps or image_shape")
        lim = torch.tensor(grid, dtype=torch.float64) / 2
        if bool((coord.abs() > lim + 1e-6).any()):
            raise InputDataError(
                f"NonCartesianMRI: coordinates must lie in [-N/2, N/2] for grid {grid}, found "
                f"range [{float(coord.min()):.2f}, {float(coord.max()):.2f}]"
            )
        traj = tuple(coord.shape[:-1])
        coil = () if maps is None else (int(maps.shape[0]),)
        super().__init__(grid, (*coil, *traj))
        self.grid, self.traj, self.n_coils = grid, traj, (coil[0] if coil else None)
        self.oversamp, self.width, self.real_input = float(oversamp), int(width), bool(real_input)
        self.register_buffer("coord", coord)
        self.register_buffer("maps", maps)

    def _np(self, t: Tensor) -> np.ndarray:
        return t.detach().cpu().resolve_conj().resolve_neg().numpy()

    def _forward(self, x):
        dev = x.device
        cdt = _complex_of(x.dtype)
        x = x.to(cdt)
        if self.maps is not None:
            x = x.unsqueeze(-3) * self.maps.to(device=x.device, dtype=cdt)
        out = require("sigpy", "mri").nufft(
            self._np(x), self._np(self.coord), oversamp=self.oversamp, width=self.width
        )
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=dev, dtype=cdt)

    def _adjoint(self, y):
        dev = y.device
        cdt = _complex_of(y.dtype)
        y = y.to(cdt)
        nt = len(self.traj)
        oshape = (*y.shape[: y.ndim - nt], *self.grid)
        z = require("sigpy", "mri").nufft_adjoint(
            self._np(y), self._np(self.coord), oshape=oshape, oversamp=self.oversamp, width=self.width
        )
        z = torch.from_numpy(np.ascontiguousarray(z)).to(device=dev, dtype=cdt)
        if self.maps is not None:
            z = (z * self.maps.to(device=dev, dtype=cdt).conj()).sum(dim=-3)
        return torch.real(z).contiguous() if self.real_input else z

    def forward(self, x):
        if not self.real_input and isinstance(x, Tensor) and not x.is_complex():
            x = x.to(_complex_of(x.dtype))
        elif self.real_input and x.is_complex():
            raise InputDataError(
                "NonCartesianMRI(real_input=True): expected a real image, found a complex one"
            )
        return super().forward(x)


def radial_trajectory(n_spokes: int, n_readout: int, golden: bool = True, dtype=torch.float32) -> Tensor:
    """Radial k-space coordinates ``(n_spokes, n_readout, 2)`` in grid units, for :class:`NonCartesianMRI`.

    Spoke k passes through the centre at angle θ_k = k·φ with φ = π(√5−1)/2 (golden angle, for full
    spokes) or π/n_spokes (uniform); samples are spaced by one grid unit, from −n_readout/2.
    """
    if n_spokes < 1 or n_readout < 2:
        raise InputDataError(
            f"radial_trajectory: expected n_spokes >= 1 and n_readout >= 2, found {n_spokes}, {n_readout}"
        )
    step = math.pi * (math.sqrt(5.0) - 1.0) / 2.0 if golden else math.pi / n_spokes
    theta = torch.arange(n_spokes, dtype=torch.float64) * step
    r = torch.arange(n_readout, dtype=torch.float64) - n_readout / 2
    kx = r[None, :] * torch.cos(theta)[:, None]
    ky = r[None, :] * torch.sin(theta)[:, None]
    return torch.stack([kx, ky], dim=-1).to(dtype)


# ------------------------------------------------------------------------------------------------
# Sampling masks
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Coil sensitivity maps
# ------------------------------------------------------------------------------------------------
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
