"""2D CT projectors with exact adjoints: parallel beam and flat-detector fan beam.

Forward model
-------------
For an image f of shape ``(H, W)`` (pixel units, conventions in :mod:`diffrecon.operators.geometry`,
identical to ASTRA's), the projector returns the sinogram

    y[a, j] = ∫ f̃(D_aj + t·R̂_aj) dt,     a = 0..n_angles−1,  j = 0..n_detectors−1,

where the ray of view a and bin j passes through D_aj with unit direction R̂_aj and f̃ is the image
interpolated with Joseph's kernel (linear between pixel centres along the axis the ray crosses; see
:mod:`diffrecon.operators._joseph2d`). Integrals are in pixel units: a uniform image of value 1
gives the chord length in pixels. The discretisation is that of ASTRA's CPU ``linear`` projector
(parallel beam), applied to diverging rays for fan beam.

The operator is linear, ``y = A f`` with a sparse matrix A of shape ``(n_angles·n_detectors, H·W)``,
and its adjoint (the unfiltered back-projection) is exactly ``Aᵀ``: both paths below apply the same
weights, so the dot test holds to rounding in float32 and float64.

Execution paths
---------------
* **matrix** — A and Aᵀ are built once per (geometry, dtype, device) as CSR matrices with int32
  indices and kept in a small LRU cache shared by all operators of the process; a call lays the
  image stack out as ``(H·W, n_slices)`` and does one sparse × dense product for all slices.
* **matrix-free** — when A and Aᵀ would exceed ``memory_budget_bytes`` (e.g. 512×512 at 720 views),
  the same weights are generated per block of views on every call (block size chosen so the
  working set stays within the budget) and applied without ever holding the whole matrix:
  forward as a fixed-width CSR block over the zero-padded image (a gather of two pixels per ray
  step); adjoint pixel-driven for parallel beams (each pixel gathers the 2–3 bins whose rays cross
  it, same weights) and by ``index_add_`` scatter for fan beams. Results equal the matrix path's
  up to floating-point rounding (≈1e-16 relative in float64).

Both are plain torch and run wherever the input lives (CPU or CUDA), in float32 or float64.
Results are returned as views of the ``(rays or pixels, slices)`` product, i.e. with the slice
index fastest in memory; feeding such a result back (``A.adjoint(A(x))``, CG loops) costs no
transposition. Call ``.contiguous()`` if a row-major copy is needed.

Example::

    >>> import torch
    >>> from diffrecon.operators.ct import ParallelBeam2D, sparse_angles
    >>> A = ParallelBeam2D((64, 64), sparse_angles(8))
    >>> A.out_shape
    (8, 91)
    >>> y = A(torch.ones(3, 64, 64))      # batch of 3 images → (3, 8, 91)
    >>> x = A.adjoint(y)                  # exact adjoint → (3, 64, 64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import GeometryError, InputDataError
from . import _joseph2d as _J
from .base import LinearOperator
from .geometry import (
    FanGeometry,
    ParallelGeometry,
    default_n_detectors,
    geometry_from_dict,
    limited_angles,
    sparse_angles,
)

Tensor = torch.Tensor

_CACHE = _J.MatrixCache(max_entries=6, max_bytes=3 << 30)

# Views per block while building the matrix: bounds the build's transient memory.
_BUILD_BLOCK_BYTES = 128 << 20
# Upper bound on a matrix-free block's working set, whatever the budget.
_MAX_BLOCK_BYTES = 512 << 20


def clear_matrix_cache() -> None:
    """Drop every cached system matrix (they are rebuilt on the next call)."""
    _CACHE.clear()


def _describe(geom) -> str:
    if geom.kind == "parallel":
        return (
            f"ParallelGeometry(image_shape={geom.image_shape}, n_angles={geom.n_angles}, "
            f"n_detectors={geom.n_detectors}, detector_spacing={geom.detector_spacing})"
        )
    return (
        f"FanGeometry(image_shape={geom.image_shape}, n_angles={geom.n_angles}, "
        f"source_distance={geom.source_distance}, detector_distance={geom.detector_distance}, "
        f"n_detectors={geom.n_detectors}, detector_spacing={geom.detector_spacing})"
    )


class _Projector2D(LinearOperator):
    """Shared machinery of :class:`ParallelBeam2D` and :class:`FanBeam2D`."""

    custom_autograd = True

    def __init__(self, geometry, memory_budget_bytes: int):
        super().__init__(geometry.image_shape, geometry.sinogram_shape)
        try:
            budget = int(memory_budget_bytes)
        except (TypeError, ValueError) as exc:
            raise InputDataError(
                f"memory_budget_bytes: expected an integer, found {memory_budget_bytes!r}"
            ) from exc
        if budget < 0:
            raise InputDataError(f"memory_budget_bytes: expected a non-negative integer, found {budget}")
        self.geometry = geometry
        self.memory_budget_bytes = budget
        self._rays = _J.rays_of(geometry)
        self._nnz_bound = _J.count_nonzeros(self._rays, geometry.image_shape)
        self._key = _J.geometry_key(geometry)
        # Tracks the module's device (``.to(device)``, ``norm()``); the geometry itself is numpy.
        self.register_buffer(
            "angles", torch.as_tensor(geometry.angles, dtype=torch.float64), persistent=False
        )

    # -- sizes and paths --------------------------------------------------------------------------
    @property
    def n_pixels(self) -> int:
        h, w = self.geometry.image_shape
        return h * w

    @property
    def n_rays(self) -> int:
        return self.geometry.n_angles * self.geometry.n_detectors

    def matrix_nbytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Estimated bytes of A and Aᵀ in CSR (int32 indices) for ``dtype`` (an upper bound)."""
        return _J.matrix_bytes(self._nnz_bound, self.n_rays, self.n_pixels, dtype)

    def uses_matrix(self, dtype: torch.dtype = torch.float32) -> bool:
        """True when calls in ``dtype`` use the cached sparse matrix, False for the matrix-free path."""
        return self.matrix_nbytes(dtype) <= self.memory_budget_bytes

    def system_matrix(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """``(A, Aᵀ)`` as CSR tensors, shapes ``(n_angles·n_detectors, H·W)`` and its transpose.

        Rows of A are rays in (view, bin) order; columns are flat pixel indices ``i·W + j``. Built
        on first use (whatever the memory budget) and cached per (geometry, dtype, device).
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = (self._key, dtype, str(device))
        mats = _CACHE.get(key)
        if mats is None:
            h, w = self.geometry.image_shape
            per_view = self.geometry.n_detectors * 2 * max(h, w) * 96
            block = max(1, _BUILD_BLOCK_BYTES // per_view)
            mats = _J.build_matrices(self._rays, self.geometry.image_shape, dtype, device, block)
            _CACHE.put(key, mats)
        return mats

    # -- application ------------------------------------------------------------------------------
    def _compute_dtype(self, t: Tensor, what: str) -> torch.dtype:
        if t.is_complex() or not t.is_floating_point():
            raise InputDataError(
                f"{type(self).__name__} {what}: expected a real floating tensor (float32 or float64), "
                f"found dtype {t.dtype}"
            )
        return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32

    def _block(self, n_slices: int, dtype: torch.dtype) -> int:
        item = torch.empty((), dtype=dtype).element_size()
        budget = min(max(self.memory_budget_bytes, 1), _MAX_BLOCK_BYTES)
        return _J.views_per_block(
            self.geometry.n_detectors, self.geometry.image_shape, n_slices, item, budget
        )

    def _forward(self, x: Tensor) -> Tensor:
        dtype = self._compute_dtype(x, "input")
        lead = x.shape[:-2]
        n_slices = math.prod(lead)
        x2 = x.to(dtype).reshape(n_slices, self.n_pixels).t().contiguous()  # (n_pixels, S)
        if self.uses_matrix(dtype):
            A, _ = self.system_matrix(dtype, x.device)
            y2 = _J.sparse_apply(A, x2)
        else:
            y2 = _J.matrix_free_forward(
                self._rays, self.geometry.image_shape, x2, self._block(n_slices, dtype)
            )
        # A view, no copy: the result keeps the (rays, slices) memory layout (slice index fastest),
        # which is exactly what the adjoint wants as input, so A.adjoint(A(x)) never transposes.
        return y2.t().reshape(*lead, *self.out_shape).to(x.dtype)

    def _adjoint(self, y: Tensor) -> Tensor:
        dtype = self._compute_dtype(y, "adjoint input")
        lead = y.shape[:-2]
        n_slices = math.prod(lead)
        y2 = y.to(dtype).reshape(n_slices, self.n_rays).t().contiguous()  # (n_rays, S)
        if self.uses_matrix(dtype):
            _, AT = self.system_matrix(dtype, y.device)
            x2 = _J.sparse_apply(AT, y2)
        else:
            block = self._block(n_slices, dtype)
            if self.geometry.kind == "parallel" and self.geometry.n_detectors > 1:
                x2 = _J.matrix_free_adjoint_parallel(self._rays, self.geometry.image_shape, y2, block)
            else:
                x2 = _J.matrix_free_adjoint(self._rays, self.geometry.image_shape, y2, block)
        return x2.t().reshape(*lead, *self.in_shape).to(y.dtype)  # a view, as in _forward

    def _check(self, t, shape, what) -> None:
        try:
            super()._check(t, shape, what)
        except InputDataError as exc:
            raise InputDataError(f"{exc}; the operator's geometry is {_describe(self.geometry)}") from None

    def extra_repr(self) -> str:
        path = "matrix" if self.uses_matrix() else "matrix-free"
        return f"{_describe(self.geometry)}, path(float32)={path}"


class ParallelBeam2D(_Projector2D):
    """2D parallel-beam projector (Joseph / ASTRA ``linear`` kernel) with an exact adjoint.

    ``y = A x``: x of shape ``(..., H, W)`` ↦ y of shape ``(..., n_angles, n_detectors)``, line integrals
    in pixel units. View a at angle θ_a (radians) integrates along the direction (sin θ, −cos θ);
    bin j is the ray through the point u_j·(cos θ, sin θ), ``u_j = (j − (n_detectors − 1)/2)·spacing``.
    ``adjoint`` is Aᵀ (unfiltered back-projection, no π/(2N) factor).

    Args:
        image_shape: ``(H, W)``.
        angles: projection angles in radians (e.g. :func:`sparse_angles`, :func:`limited_angles`).
        n_detectors: number of bins; ``None`` covers the image diagonal
            (``ceil(√(H²+W²)/detector_spacing)``).
        detector_spacing: bin width in pixels.
        memory_budget_bytes: largest A + Aᵀ (bytes) kept as a sparse matrix; above it the operator
            runs matrix-free with the same weights (slower, memory ≈ one block of views).

    Raises:
        GeometryError: no views, non-finite angles, non-positive sizes.
        InputDataError: an input whose trailing shape is not ``(H, W)`` (forward) or
            ``(n_angles, n_detectors)`` (adjoint), or that is not a real floating tensor.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        angles: Sequence[float] | np.ndarray,
        n_detectors: int | None = None,
        detector_spacing: float = 1.0,
        *,
        memory_budget_bytes: int = 1 << 30,
    ):
        if n_detectors is None:
            try:
                n_detectors = default_n_detectors(tuple(image_shape), float(detector_spacing))
            except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
                raise GeometryError(
                    f"ParallelBeam2D: cannot derive n_detectors from image_shape={image_shape!r}, "
                    f"detector_spacing={detector_spacing!r}"
                ) from exc
        geom = ParallelGeometry(image_shape, angles, n_detectors, detector_spacing)
        super().__init__(geom, memory_budget_bytes)

    @classmethod
    def from_geometry(cls, geom: ParallelGeometry, *, memory_budget_bytes: int = 1 << 30) -> ParallelBeam2D:
        """Build from a :class:`ParallelGeometry` (or its ``to_dict`` form)."""
        if isinstance(geom, dict):
            geom = geometry_from_dict(geom)
        if not isinstance(geom, ParallelGeometry):
            raise GeometryError(
                f"ParallelBeam2D.from_geometry: expected a ParallelGeometry, found {type(geom).__name__}"
            )
        return cls(
            geom.image_shape,
            geom.angles,
            geom.n_detectors,
            geom.detector_spacing,
            memory_budget_bytes=memory_budget_bytes,
        )


class FanBeam2D(_Projector2D):
    """2D fan-beam projector, flat detector, Joseph's kernel on diverging rays, exact adjoint.

    ``y = A x``: x ``(..., H, W)`` ↦ y ``(..., n_angles, n_detectors)``. At angle θ the source sits at
    ``S·(sin θ, −cos θ)`` and bin j at ``−D·(sin θ, −cos θ) + u_j·(cos θ, sin θ)`` with
    ``u_j = (j − (n_detectors − 1)/2)·spacing`` measured *on the detector* (ASTRA's ``fanflat``); y[a, j]
    is the integral, in pixel units, of the interpolated image along the whole line through the
    source and the bin centre.

    Args:
        image_shape: ``(H, W)``.
        angles: source angles in radians.
        source_distance: S, rotation centre to source, pixels (outside the image circle).
        detector_distance: D, rotation centre to detector, pixels.
        n_detectors: number of bins.
        detector_spacing: bin width on the detector, pixels.
        memory_budget_bytes: as for :class:`ParallelBeam2D`.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        angles: Sequence[float] | np.ndarray,
        source_distance: float,
        detector_distance: float,
        n_detectors: int,
        detector_spacing: float = 1.0,
        *,
        memory_budget_bytes: int = 1 << 30,
    ):
        geom = FanGeometry(
            image_shape, angles, source_distance, detector_distance, n_detectors, detector_spacing
        )
        super().__init__(geom, memory_budget_bytes)

    @classmethod
    def from_geometry(cls, geom: FanGeometry, *, memory_budget_bytes: int = 1 << 30) -> FanBeam2D:
        """Build from a :class:`FanGeometry` (or its ``to_dict`` form)."""
        if isinstance(geom, dict):
            geom = geometry_from_dict(geom)
        if not isinstance(geom, FanGeometry):
            raise GeometryError(
                f"FanBeam2D.from_geometry: expected a FanGeometry, found {type(geom).__name__}"
            )
        return cls(
            geom.image_shape,
            geom.angles,
            geom.source_distance,
            geom.detector_distance,
            geom.n_detectors,
            geom.detector_spacing,
            memory_budget_bytes=memory_budget_bytes,
        )


def operator_from_geometry(geom, **kwargs) -> LinearOperator:
    """The projector for a geometry object (or its ``to_dict`` form), dispatching on ``geom.kind``.

    ``"parallel"`` → :class:`ParallelBeam2D`, ``"fan"`` → :class:`FanBeam2D`, ``"cone"`` →
    ``ConeBeam3D`` (imported lazily). Keyword arguments go to the operator's ``from_geometry``.
    """
    if isinstance(geom, dict):
        geom = geometry_from_dict(geom)
    kind = getattr(geom, "kind", None)
    if kind == "parallel":
        return ParallelBeam2D.from_geometry(geom, **kwargs)
    if kind == "fan":
        return FanBeam2D.from_geometry(geom, **kwargs)
    if kind == "cone":
        from .cone import ConeBeam3D

        return ConeBeam3D.from_geometry(geom, **kwargs)
    raise GeometryError(
        f"operator_from_geometry: expected a geometry of kind 'parallel', 'fan' or 'cone', found {kind!r}"
    )


__all__ = [
    "FanBeam2D",
    "ParallelBeam2D",
    "clear_matrix_cache",
    "limited_angles",
    "operator_from_geometry",
    "sparse_angles",
]
