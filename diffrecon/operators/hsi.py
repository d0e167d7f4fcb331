"""Hyperspectral degradations with the singular value decomposition DDRM-type samplers need.

Cubes are tensors of trailing shape ``(H, W, B)`` — rows ``y``, columns ``x``, spectral band — the
same axis order as the :mod:`xarray` data model of :mod:`diffrecon.io.hsi` (dims ``(y, x, band)``).
Leading batch dimensions pass through every operator.

Every operator here is a :class:`SVDOperator`: besides ``forward``/``adjoint`` it factors itself as

.. math::  A = U \\,\\mathrm{diag}(s)\\, V^\\top ,

with :math:`V` orthogonal on the domain and :math:`U` orthonormal on the range. The *spectral
coordinates* ``z = V^T x`` are stored in a tensor of the domain's shape ``(H, W, B)``, so ``s`` is a
tensor of that shape too (zero where a coordinate lies in the null space), and ``Ut(y)`` places the
range's coordinates on the matching domain positions (zero where ``s = 0``). Then

* ``A x = U(s · Vt(x))``   and   ``Aᵀ y = V(s · Ut(y))``,
* ``Vt(V(z)) = z`` and ``V(Vt(x)) = x`` (V orthogonal),
* ``U(Ut(y)) = y`` for every ``y`` in the range of A.

The operators are real and noise-free; measurement noise is added by
:func:`~diffrecon.operators.noise.add_gaussian_noise` or :func:`~diffrecon.operators.noise.add_mixed_noise`
and its level is either known or estimated by :func:`~diffrecon.operators.noise.estimate_sigma` (all in
:mod:`diffrecon.operators.noise`).

Operators (``shape = (H, W, B)``):

=====================  ==========================================  ====================
operator               forward model                               range shape
=====================  ==========================================  ====================
:class:`Denoising`     ``y = x``                                   ``(H, W, B)``
:class:`Inpainting`    ``y = m ⊙ x`` (voxel mask, zeros elsewhere) ``(H, W, B)``
:class:`MissingBands`  ``y = x[..., kept]``                        ``(H, W, B_kept)``
:class:`SpatialSR`     ``y_b = K_h x_b K_wᵀ`` (antialiased         ``(H//f, W//f, B)``
                       bicubic blur + stride f, per band)
:class:`SpectralCS`    ``y[h, w] = Φ x[h, w]``, Φ with             ``(H, W, M)``
                       orthonormal rows (M < B)
=====================  ==========================================  ====================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputDataError
from .base import LinearOperator
from .elementary import Mask

Tensor = torch.Tensor

__all__ = [
    "SVDOperator",
    "Denoising",
    "Inpainting",
    "MissingBands",
    "SpatialSR",
    "SpectralCS",
    "bicubic_downsampling_matrix",
    "random_voxel_mask",
    "check_cube",
    "check_sigma",
]


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _cube_shape(shape: Sequence[int], who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputDataError(f"{who}: expected a cube shape (H, W, B) with positive sizes, found {shape}")
    return shape  # type: ignore[return-value]


def check_cube(x: Tensor, who: str = "cube", allow_nan: bool = False) -> Tensor:
    """Validate a hyperspectral cube tensor of shape ``(H, W, B)`` (or ``(..., H, W, B)``).

    Raises :class:`~diffrecon.errors.InputDataError` for a non-tensor, fewer than 3 dimensions, an
    empty axis, a non-floating dtype, or NaN/Inf values (unless ``allow_nan``: NaN then marks
    missing entries, Inf is still rejected).
    """
    if not isinstance(x, Tensor):
        raise InputDataError(f"{who}: expected a torch.Tensor of shape (H, W, B), found {type(x).__name__}")
    if x.ndim < 3:
        raise InputDataError(
            f"{who}: expected a cube of shape (H, W, B) (y, x, band), found shape {tuple(x.shape)}"
        )
    if min(x.shape[-3:]) < 1:
        raise InputDataError(f"{who}: expected non-empty axes, found shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputDataError(f"{who}: expected a floating-point cube, found dtype {x.dtype}")
    bad = torch.isinf(x) if allow_nan else ~torch.isfinite(x)
    if bool(bad.any()):
        n = int(bad.sum())
        what = "Inf" if allow_nan else "NaN/Inf"
        raise InputDataError(f"{who}: expected finite values, found {n} {what} entries of {x.numel()}")
    return x


def check_sigma(sigma, who: str = "sigma") -> Tensor | float:
    """Validate a noise standard deviation (scalar or per-band vector): finite and strictly positive."""
    t = torch.as_tensor(sigma, dtype=torch.float64)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise InputDataError(f"{who}: expected a finite noise standard deviation, found {sigma!r}")
    if bool((t <= 0).any()):
        raise InputDataError(
            f"{who}: expected a noise standard deviation > 0 (in data units, e.g. 0.1 for a cube in [0, 1]), "
            f"found {float(t.min()):g}; for (nearly) noise-free data pass a small value such as 1e-3"
        )
    return float(t) if t.ndim == 0 else t


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
class SVDOperator(LinearOperator):
    """A linear operator on cubes ``(H, W, B)`` that knows its SVD ``A = U diag(s) Vᵀ``.

    Subclasses implement ``Vt``, ``V``, ``Ut``, ``U`` and ``singular_values`` (see the module
    docstring for the coordinate convention). ``_forward``/``_adjoint`` default to the factored
    forms; subclasses override them with direct (cheaper) formulas, and the tests check both agree.
    """

    def __init__(self, shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__(shape, out_shape)

    # -- SVD interface ---------------------------------------------------------------------
    def singular_values(self) -> Tensor:
        """Singular values ``s`` placed on the spectral coordinates, a tensor of shape ``in_shape``."""
        raise NotImplementedError

    def Vt(self, x: Tensor) -> Tensor:
        """Spectral coordinates ``Vᵀ x``: ``(..., H, W, B) → (..., H, W, B)``."""
        raise NotImplementedError

    def V(self, z: Tensor) -> Tensor:
        """Back from spectral coordinates: ``(..., H, W, B) → (..., H, W, B)``."""
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:
        """Range coordinates ``Uᵀ y`` on the domain's spectral positions: ``(..., *out) → (..., H, W, B)``."""
        raise NotImplementedError

    def U(self, w: Tensor) -> Tensor:
        """Range vector from coordinates (``s = 0`` entries ignored): ``(..., H, W, B) → (..., *out)``."""
        raise NotImplementedError

    def _forward(self, x):
        return self.U(self.singular_values().to(x.dtype) * self.Vt(x))

    def _adjoint(self, y):
        return self.V(self.singular_values().to(y.dtype) * self.Ut(y))

    def ones_image(self, dtype=torch.float32, device=None) -> Tensor:
        """``A(1)``: the image of the all-ones cube (used to map data from [0, 1] to [−1, 1])."""
        device = device or self._device()
        return self.forward(torch.ones(self.in_shape, dtype=dtype, device=device))


# ---------------------------------------------------------------------------------------------
# denoising
# ---------------------------------------------------------------------------------------------
class Denoising(SVDOperator):
    """Identity on cubes of shape ``(H, W, B)``: ``y = x`` (the noise is added outside).

    SVD: ``U = V = I``, ``s = 1`` everywhere.

    Example::

        >>> op = Denoising((8, 6, 5))
        >>> op(torch.ones(8, 6, 5)).shape
        torch.Size([8, 6, 5])
    """

    def __init__(self, shape: Sequence[int]):
        shape = _cube_shape(shape, "Denoising")
        super().__init__(shape, shape)

    def singular_values(self):
        return torch.ones(self.in_shape)

    def Vt(self, x):
        return x

    V = Ut = U = Vt

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y


# ---------------------------------------------------------------------------------------------
# inpainting
# ---------------------------------------------------------------------------------------------
def random_voxel_mask(shape: Sequence[int], observed: float = 0.2, seed: int = 0) -> Tensor:
    """Random voxel-wise sampling mask (True = observed) with exactly ``round(observed·N)`` voxels kept.

    Args:
        shape: cube shape ``(H, W, B)``.
        observed: fraction of voxels kept, in (0, 1]. DDS2M's protocol uses 0.1, 0.2, 0.3.
        seed: seed of the CPU generator (the same seed gives the same mask on every machine).
    """
    shape = _cube_shape(shape, "random_voxel_mask")
    if not 0.0 < float(observed) <= 1.0:
        raise InputDataError(f"random_voxel_mask: observed fraction must be in (0, 1], found {observed}")
    n = math.prod(shape)
    k = max(1, int(round(float(observed) * n)))
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:k]
    m = torch.zeros(n, dtype=torch.bool)
    m[idx] = True
    return m.view(shape)


class Inpainting(Mask, SVDOperator):
    """Voxel-wise sampling: ``y = m ⊙ x`` with a binary mask ``m`` of shape ``(H, W, B)``.

    The range keeps the cube's shape; unobserved voxels are zero. SVD: ``U = V = I`` and
    ``s = m`` (1 on observed voxels, 0 on the null space of missing voxels).

    Args:
        mask: boolean (or 0/1) tensor of shape ``(H, W, B)``; True marks observed voxels. See
            :func:`random_voxel_mask` for DDS2M's 10–30 % protocol.

    Raises:
        InputDataError: mask not 3-D, not binary, or with no observed voxel.
    """

    def __init__(self, mask: Tensor):
        mask = torch.as_tensor(mask)
        if mask.ndim != 3:
            raise InputDataError(
                f"Inpainting: expected a mask of shape (H, W, B), found shape {tuple(mask.shape)}"
            )
        mf = mask.to(torch.float32)
        if not bool(((mf == 0) | (mf == 1)).all()):
            raise InputDataError("Inpainting: expected a binary mask (True/False or 0/1), found other values")
        if not bool(mf.any()):
            raise InputDataError(
                f"Inpainting: the mask observes no voxel (all False) in a cube of shape "
                f"{tuple(mask.shape)}; at least one observed voxel is needed"
            )
        Mask.__init__(self, mf)

    @property
    def observed_fraction(self) -> float:
        return float(self.mask.mean())

    def singular_values(self):
        return self.mask

    def Vt(self, x):
        return x

    V = Vt

    def Ut(self, y):
        return y * self.mask.to(y.dtype)

    def U(self, w):
        return w * self.mask.to(w.dtype)

    _forward = Mask._forward
    _adjoint = Mask._adjoint


class MissingBands(SVDOperator):
    """Whole bands missing: ``y = x[..., kept]`` of shape ``(H, W, B_kept)``.

    SVD: ``V = I``, ``s = 1`` on kept bands and 0 on missing ones, ``Ut`` scatters the kept bands
    back to their positions, ``U`` gathers them.

    Args:
        shape: cube shape ``(H, W, B)``.
        missing: indices of the missing bands (at least one band must remain).
    """

    def __init__(self, shape: Sequence[int], missing: Sequence[int]):
        shape = _cube_shape(shape, "MissingBands")
        b = shape[2]
        miss = sorted({int(i) % b if -b <= int(i) < b else int(i) for i in missing})
        if any(i < 0 or i >= b for i in miss):
            raise InputDataError(f"MissingBands: band indices must lie in [0, {b}), found {list(missing)}")
        kept = [i for i in range(b) if i not in set(miss)]
        if not kept:
            raise InputDataError(f"MissingBands: all {b} bands are missing; at least one must be observed")
        super().__init__(shape, (shape[0], shape[1], len(kept)))
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long))
        keep_mask = torch.zeros(b)
        keep_mask[kept] = 1.0
        self.register_buffer("band_mask", keep_mask)

    def singular_values(self):
        return self.band_mask.expand(self.in_shape)

    def Vt(self, x):
        return x

    V = Vt

    def Ut(self, y):
        out = y.new_zeros(*y.shape[:-1], self.in_shape[2])
        return out.index_copy(-1, self.kept.to(y.device), y)

    def U(self, w):
        return w.index_select(-1, self.kept.to(w.device))

    def _forward(self, x):
        return x.index_select(-1, self.kept.to(x.device))

    def _adjoint(self, y):
        return self.Ut(y)


# ---------------------------------------------------------------------------------------------
# spatial super-resolution
# ---------------------------------------------------------------------------------------------
def _cubic(t: Tensor, a: float = -0.5) -> Tensor:
    t = t.abs()
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_downsampling_matrix(n: int, factor: int, a: float = -0.5) -> Tensor:
    """1-D antialiased bicubic downsampling matrix of shape ``(n // factor, n)`` (float64).

    Output sample i sits at input coordinate ``u_i = (i + ½)·f − ½`` (pixel centres aligned as in
    MATLAB's ``imresize``); its weights are Keys' cubic kernel (a = −0.5) stretched by f,
    ``w(p) ∝ k((p − u_i)/f)`` for the 4f nearest input pixels p, normalised to sum 1. Taps outside
    ``[0, n)`` are folded back by symmetric reflection, so every row still sums to 1 (a constant
    image stays constant). For even f this is DDRM/DDS2M's ``sisr_bicubic`` kernel.
    """
    n, f = int(n), int(factor)
    if f < 1 or n < f:
        raise InputDataError(
            f"SpatialSR: need an integer factor >= 1 and a side >= factor, found side {n}, factor {f}"
        )
    m = n // f
    mat = torch.zeros(m, n, dtype=torch.float64)
    for i in range(m):
        u = (i + 0.5) * f - 0.5
        lo, hi = math.floor(u - 2 * f), math.ceil(u + 2 * f)
        p = torch.arange(lo, hi + 1, dtype=torch.float64)
        w = _cubic((p - u) / f, a)
        w = w / w.sum()
        for pj, wj in zip(p.tolist(), w.tolist(), strict=False):
            if wj == 0.0:
                continue
            q = int(pj)
            # symmetric reflection (…, 1, 0 | 0, 1, …) until inside
            while q < 0 or q >= n:
                q = -q - 1 if q < 0 else 2 * n - q - 1
            mat[i, q] += wj
    return mat


class SpatialSR(SVDOperator):
    """Spatial super-resolution degradation: per band, blur with an antialiased bicubic kernel and
    keep every f-th pixel, ``y_b = K_h x_b K_wᵀ`` with ``K_h`` of shape ``(H//f, H)`` and ``K_w``
    of shape ``(W//f, W)`` (:func:`bicubic_downsampling_matrix`).

    Shapes: ``(..., H, W, B) → (..., H//f, W//f, B)``; any H, W ≥ f (non-square fine).

    SVD: with ``K_h = U_h S_h V_hᵀ`` and ``K_w = U_w S_w V_wᵀ`` (thin SVDs), the operator is
    ``K_h ⊗ K_w`` on every band, so ``Vt(x)_b = V_hᵀ x_b V_w`` (full orthogonal ``V``), the singular
    values are ``s_h[i]·s_w[j]`` on the top-left ``(H//f, W//f)`` block of each band and 0 elsewhere,
    and ``Ut(y)_b`` is ``U_hᵀ y_b U_w`` zero-padded to ``(H, W)``.

    Args:
        shape: cube shape ``(H, W, B)``.
        factor: integer downsampling factor (2 and 4 in the benchmarks).
    """

    def __init__(self, shape: Sequence[int], factor: int = 2):
        shape = _cube_shape(shape, "SpatialSR")
        f = int(factor)
        if f != factor or f < 1:
            raise InputDataError(f"SpatialSR: factor must be a positive integer, found {factor!r}")
        h, w, b = shape
        if h < f or w < f:
            raise InputDataError(f"SpatialSR: cube side {h}x{w} is smaller than the factor {f}")
        super().__init__(shape, (h // f, w // f, b))
        self.factor = f
        kh, kw = bicubic_downsampling_matrix(h, f), bicubic_downsampling_matrix(w, f)
        uh, sh, vh = self._full_svd(kh)
        uw, sw, vw = self._full_svd(kw)
        # float64 buffers, cast to the input's dtype on use (exact in float64, cheap in float32)
        self.register_buffer("Kh", kh)
        self.register_buffer("Kw", kw)
        self.register_buffer("Uh", uh)
        self.register_buffer("Uw", uw)
        self.register_buffer("Vh", vh)  # (H, H), columns = right singular vectors
        self.register_buffer("Vw", vw)
        s = torch.zeros(h, w, dtype=torch.float64)
        s[: h // f, : w // f] = torch.outer(sh, sw)
        self.register_buffer("s", s)

    @staticmethod
    def _full_svd(k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u, s, vh = torch.linalg.svd(k, full_matrices=True)  # k = u diag(s) vh[:m]
        return u, s, vh.T.contiguous()

    def _m(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(like.dtype)

    def singular_values(self):
        return self.s.unsqueeze(-1).expand(self.in_shape)

    def _singulars_like(self, like: Tensor) -> Tensor:
        return self._m("s", like).unsqueeze(-1)

    # Cubes are (..., H, W, B): contract H with a left matrix and W with a right one.
    @staticmethod
    def _lr(a: Tensor, x: Tensor, b: Tensor) -> Tensor:
        """``a · x_band · bᵀ`` for every band: a (P, H), x (..., H, W, B), b (Q, W) → (..., P, Q, B)."""
        return torch.einsum("ph,...hwc,qw->...pqc", a, x, b)

    def Vt(self, x):
        return self._lr(self._m("Vh", x).T, x, self._m("Vw", x).T)

    def V(self, z):
        return self._lr(self._m("Vh", z), z, self._m("Vw", z))

    def Ut(self, y):
        h, w, _ = self.in_shape
        c = self._lr(self._m("Uh", y).T, y, self._m("Uw", y).T)
        pad = (0, 0, 0, w - c.shape[-2], 0, h - c.shape[-3])
        return torch.nn.functional.pad(c, pad)

    def U(self, wv):
        m, n, _ = self.out_shape
        return self._lr(self._m("Uh", wv), wv[..., :m, :n, :], self._m("Uw", wv))

    def _forward(self, x):
        return self._lr(self._m("Kh", x), x, self._m("Kw", x))

    def _adjoint(self, y):
        return self._lr(self._m("Kh", y).T, y, self._m("Kw", y).T)

    def forward_factored(self, x: Tensor) -> Tensor:
        """``U(s · Vt(x))`` (the SVD route; equals ``forward``)."""
        return self.U(self._singulars_like(x) * self.Vt(x))

    def adjoint_factored(self, y: Tensor) -> Tensor:
        return self.V(self._singulars_like(y) * self.Ut(y))

    def extra_repr(self) -> str:
        return f"shape={self.in_shape}, factor={self.factor}"


# ---------------------------------------------------------------------------------------------
# spectral compressed sensing
# ---------------------------------------------------------------------------------------------
class SpectralCS(SVDOperator):
    """Spectral compressed sensing: every pixel's spectrum is measured by M < B orthonormal random
    projections, ``y[h, w, :] = Φ x[h, w, :]`` with ``Φ Φᵀ = I_M``.

    SVD: ``Q = [Φᵀ, Φ⊥ᵀ]`` (B×B orthogonal from a QR of a Gaussian matrix), ``Vt(x) = x Q``,
    ``s = 1`` on the first M spectral coordinates and 0 on the rest, ``U = I`` (padded/truncated).

    Args:
        shape: cube shape ``(H, W, B)``.
        n_measurements: M, between 1 and B.
        seed: seed of the Gaussian matrix.
    """

    def __init__(self, shape: Sequence[int], n_measurements: int, seed: int = 0):
        shape = _cube_shape(shape, "SpectralCS")
        b = shape[2]
        m = int(n_measurements)
        if not 1 <= m <= b:
            raise InputDataError(f"SpectralCS: n_measurements must be in [1, {b}], found {n_measurements}")
        super().__init__(shape, (shape[0], shape[1], m))
        g = torch.Generator().manual_seed(int(seed))
        q, r = torch.linalg.qr(torch.randn(b, b, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # unique orthogonal factor
        self.register_buffer("Q", q)  # float64; cast on use
        sv = torch.zeros(b)
        sv[:m] = 1.0
        self.register_buffer("sv", sv)
        self.m = m

    def singular_values(self):
        return self.sv.expand(self.in_shape)

    def Vt(self, x):
        return x @ self.Q.to(x.dtype)

    def V(self, z):
        return z @ self.Q.to(z.dtype).T

    def Ut(self, y):
        return torch.nn.functional.pad(y, (0, self.in_shape[2] - self.m))

    def U(self, w):
        return w[..., : self.m]

    def _forward(self, x):
        return x @ self.Q[:, : self.m].to(x.dtype)

    def _adjoint(self, y):
        return y @ self.Q[:, : self.m].to(y.dtype).T

    def extra_repr(self) -> str:
        return f"shape={self.in_shape}, n_measurements={self.m}"
