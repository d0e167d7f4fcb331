"""MRI forward operators: Cartesian SENSE (2-D, per-slice, 3-D) and non-Cartesian NUFFT.

Forward model (Cartesian SENSE). For an image x on a grid G = (H, W) (or (D, H, W) in 3D), coil
sensitivities S_c and a sampling mask M on the k-space grid,

    (A x)_c = M ⊙ F(S_c ⊙ x),        Aᴴ y = Σ_c conj(S_c) ⊙ Fᴴ(M ⊙ y_c),

where F is the **centred, orthonormal** DFT over the grid axes: the DC sample is at index n//2 of each
k-space axis, the image centre at index n//2, and ‖F x‖ = ‖x‖ (unitary; Fᴴ = F⁻¹). This is the
convention of fastMRI (``fft2c``) and sigpy (``sp.fft(..., center=True)``), so ``MultiCoilMRI`` agrees
with ``sigpy.mri.linop.Sense`` to float32 rounding. With coil maps normalised to Σ_c |S_c|² = 1 and a
binary mask, ‖A‖ ≤ 1 and a fully sampled A is an isometry. ``fftc``/``ifftc`` expose that transform
and :func:`rss` the root-sum-of-squares coil combination.

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

Units: k-space values carry the image's units (F is unitary, so a fully sampled ‖A x‖ = ‖x‖ with
normalised maps); grid positions are in pixels and non-Cartesian k-space coordinates in cycles per
field of view (grid units).

Real-valued images. MR images are complex; by default the domain is complex (``complex64``; real
input is promoted). Pass ``real_input=True`` for a real domain (e.g. magnitude images as in
DiffusionMBIR): then the forward map is x ↦ A x for real x and the adjoint is **Re(Aᴴ y)**, which is
the exact adjoint of A restricted to real images in the real inner product ⟨a, b⟩ = Re Σ conj(a)·b.

Sampling masks (:mod:`diffrecon.operators.sampling`) and coil sensitivities
(:mod:`diffrecon.operators.coils`) live in their own modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    "radial_trajectory",
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

        >>> from diffrecon.operators import MultiCoilMRI, birdcage_maps, uniform1d_mask
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
    e.g. a :func:`~diffrecon.operators.sampling.poisson2d_mask` of shape ``(D, H)`` given as
    ``mask[..., None]`` with readout along W.

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

