"""Circular-orbit cone-beam projector with an exact adjoint (pure torch) and an optional ASTRA CUDA path.

Forward model (see :mod:`diffrecon.operators.geometry` for the conventions): for view θ the source
sits at s(θ) = S·(sin θ, −cos θ, 0) and detector pixel (r, c) at

    d(θ, r, c) = −D·(sin θ, −cos θ, 0) + u_c·(cos θ, sin θ, 0) + v_r·(0, 0, 1),
    u_c = (c − (n_cols − 1)/2)·s_col,   v_r = (r − (n_rows − 1)/2)·s_row,

and the measurement is the line integral of the volume along the segment s → d:

    p(θ, r, c) = ∫ f(s + t·(d − s)) |d − s| dt        (lengths in voxel units).

Volume voxel (k, i, j) of an array ``(D, H, W)`` is centred at
(x, y, z) = (j − (W − 1)/2, (H − 1)/2 − i, k − (D − 1)/2).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import GeometryError, InputDataError, MissingDependencyError, require
from .base import LinearOperator
from .geometry import ConeGeometry, geometry_from_dict

Tensor = torch.Tensor

BACKENDS = ("auto", "torch", "astra")

# Upper bound on the number of interpolation samples (times the batch size) live at once in the
# torch backend; 2**22 samples cost ≈ 16 MiB of float32 weights + 32 MiB of int64 indices.
_DEFAULT_CHUNK_SAMPLES = 1 << 22


class ConeBeam3D(LinearOperator):
    """Cone-beam CT on a circular orbit about z with a flat detector: volume → projections.

    Geometry (module docstring and :class:`~diffrecon.operators.geometry.ConeGeometry`): at view θ the
    source is at S·(sin θ, −cos θ, 0), the flat detector is perpendicular to the central ray at
    distance D beyond the rotation axis (z), its columns along (cos θ, sin θ, 0) and rows along z, both
    centred on the central ray; each measurement is the line integral p(θ, r, c) of the volume from
    the source to the centre of detector pixel (r, c).

    Shapes: ``(..., D, H, W)`` → ``(..., n_angles, det_rows, det_cols)``; any leading dimensions are
    batch dimensions. Units: lengths (S, D, detector pitch, ray lengths) in voxels, angles in radians;
    a volume of ones gives the intersection length of each ray with the volume box (in voxels), so the
    projections are in (volume units) × voxels.

    **torch backend** (default on CPU; used by the conformance suite). A Joseph-style ray-driven
    projector: each ray is split into the unit-spaced planes of its dominant axis (x or y; for an
    orbit about z the in-plane components always dominate), the volume is bilinearly interpolated
    in the other two axes at the intersection point (zero outside the volume), and the samples are
    summed with weight |d − s| / |(d − s)_dominant|, the ray length per unit step. The bilinear
    weight is applied as two sparse stages (in-plane neighbours for every slice, then the slice
    neighbours for every detector row); forward uses ``index_select``, the adjoint the same indices
    and weights with ``index_add_``, so ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ holds to rounding. Views (and, for
    large detectors, detector rows) are processed in blocks so that about ``chunk_samples``
    samples are live at once; nothing is cached between calls. Works on any device.

    **astra backend** (``backend="astra"``, or ``"auto"`` with a CUDA input and ``astra.use_cuda()``):
    ASTRA's ``FP3D_CUDA``/``BP3D_CUDA`` kernels run on the torch CUDA tensors in place through
    DLPack (``astra.experimental.direct_FP3D`` / ``direct_BP3D``), no host round trip. ASTRA's
    forward is the same Joseph scheme, but its back projection is voxel-driven and only
    *approximately* the adjoint of its forward projection, so the dot test does not hold to
    rounding on this backend (use the torch backend where an exact adjoint matters, e.g. for
    gradients checked against the adjoint). Computation is float32; float64 inputs are cast.
    ASTRA runs on its current GPU (``astra.set_gpu_index``), which should be the tensor's device.

    Args:
        volume_shape: ``(D, H, W)`` = (slices z, rows y, columns x).
        angles: view angles θ in radians, shape ``(n_angles,)``.
        source_distance: S, source to rotation axis, in voxels.
        detector_distance: D, rotation axis to detector, in voxels.
        detector_shape: ``(det_rows, det_cols)``.
        detector_spacing: ``(s_row, s_col)`` pixel pitch in voxels (a single number for both).
        backend: ``"auto"``, ``"torch"`` or ``"astra"``.
        chunk_samples: memory bound for the torch backend (see above).

    Example::

        >>> import math, torch
        >>> from diffrecon.operators import ConeBeam3D
        >>> A = ConeBeam3D((16, 32, 32), torch.linspace(0, 2 * math.pi, 60)[:-1], 200.0, 100.0, (24, 64))
        >>> A(torch.ones(16, 32, 32)).shape
        torch.Size([59, 24, 64])
    """

    custom_autograd = True

    def __init__(
        self,
        volume_shape: Sequence[int],
        angles: Sequence[float] | np.ndarray | Tensor,
        source_distance: float,
        detector_distance: float,
        detector_shape: Sequence[int],
        detector_spacing: Sequence[float] | float = (1.0, 1.0),
        *,
        backend: str = "auto",
        chunk_samples: int = _DEFAULT_CHUNK_SAMPLES,
    ):
        if isinstance(angles, Tensor):
            angles = angles.detach().cpu().double().numpy()
        geometry = ConeGeometry(volume_shape, angles, source_distance, detector_distance, detector_shape,
                                detector_spacing)
        if backend not in BACKENDS:
            raise InputDataError(f"ConeBeam3D backend: expected one of {BACKENDS}, found {backend!r}")
        if int(chunk_samples) < 1:
            raise InputDataError(f"ConeBeam3D chunk_samples: expected a positive integer, "
                                 f"found {chunk_samples!r}")
        super().__init__(geometry.volume_shape, geometry.projection_shape)
        self.geometry = geometry
        self.backend = backend
        self.chunk_samples = int(chunk_samples)
        angles_t = torch.as_tensor(geometry.angles, dtype=torch.float64)
        self.register_buffer("angles", angles_t, persistent=False)
        self._astra = None  # lazily built _AstraCone

    @classmethod
    def from_geometry(cls, geometry: ConeGeometry, *, backend: str = "auto", **kwargs) -> ConeBeam3D:
        """Build from a :class:`~diffrecon.operators.geometry.ConeGeometry` (or its ``to_dict`` form)."""
        if isinstance(geometry, dict):
            geometry = geometry_from_dict(geometry)
        if not isinstance(geometry, ConeGeometry):
            raise GeometryError(f"ConeBeam3D.from_geometry: expected a ConeGeometry, "
                                f"found {type(geometry).__name__}")
        g = geometry
        return cls(g.volume_shape, g.angles, g.source_distance, g.detector_distance, g.detector_shape,
                   g.detector_spacing, backend=backend, **kwargs)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"volume_shape={g.volume_shape}, n_angles={g.n_angles}, source_distance={g.source_distance}, "
                f"detector_distance={g.detector_distance}, detector_shape={g.detector_shape}, "
                f"detector_spacing={g.detector_spacing}, backend={self.backend!r}")

    # -- backend choice ---------------------------------------------------------------------------
    def _use_astra(self, t: Tensor) -> bool:
        if self.backend == "torch":
            return False
        if self.backend == "astra":
            if not t.is_cuda:
                raise InputDataError("ConeBeam3D(backend='astra'): expected a CUDA tensor (ASTRA's 3D "
                                     f"projectors are GPU-only), found a tensor on {t.device}")
            astra = require("astra", "astra")
            if not astra.use_cuda():
                raise MissingDependencyError(
                    "ConeBeam3D(backend='astra'): astra.use_cuda() is False; install a CUDA-enabled "
                    "astra-toolbox (`pip install 'diffrecon[astra]'`) or use backend='torch'")
            return True
        # auto: only for CUDA tensors, only when ASTRA is importable and reports CUDA support
        if not t.is_cuda:
            return False
        try:
            import astra  # noqa: PLC0415
        except ImportError:
            return False
        return bool(astra.use_cuda())

    # -- LinearOperator ---------------------------------------------------------------------------
    def _forward(self, x: Tensor) -> Tensor:
        if self._use_astra(x):
            return self._astra_impl().forward(x)
        return self._torch_apply(x, adjoint=False)

    def _adjoint(self, y: Tensor) -> Tensor:
        if self._use_astra(y):
            return self._astra_impl().backward(y)
        return self._torch_apply(y, adjoint=True)

    def _astra_impl(self) -> _AstraCone:
        if self._astra is None:
            self._astra = _AstraCone(self.geometry)
        return self._astra

    # -- torch backend ----------------------------------------------------------------------------
    #
    # The bilinear weight of a sample factorises into (minor-axis weight) × (slice-axis weight), and
    # for a circular orbit about z the minor-axis position of a ray's sample in plane p does not
    # depend on the detector row. So a view chunk is applied in two sparse stages:
    #   1. sheet[k, (a, c, p)] = Σ_b w_minor[a, c, p, b] · vol[k, m0 + b, plane p]      (all slices k)
    #   2. proj[a, r, c] = Σ_p step[a, r, c] · Σ_e w_slice[a, r, c, p, e] · sheet[k0 + e, (a, c, p)]
    # Stage 1 gathers D·A·C·P·2 values, stage 2 A·R·C·P·2, instead of A·R·C·P·4 for the full
    # bilinear gather, and the index arithmetic of stage 1 is shared by every detector row. The
    # adjoint runs the transposed stages with index_add_, with the same indices and weights.
    def _chunks(self, batch: int) -> tuple[int, int]:
        """Views per chunk and detector rows per block so that ≈ ``chunk_samples`` samples are live."""
        g = self.geometry
        n_z, n_y, n_x = g.volume_shape
        n_r, n_c = g.detector_shape
        per_view = max(batch, 1) * n_c * max(n_y, n_x) * 2  # samples of one detector row (or slice) per view
        views = max(1, min(g.n_angles, self.chunk_samples // (per_view * (n_r + n_z))))
        rows = max(1, min(n_r, self.chunk_samples // (per_view * views)))
        return views, rows

    def _torch_apply(self, t: Tensor, adjoint: bool) -> Tensor:
        g = self.geometry
        n_z, n_y, n_x = g.volume_shape
        n_r, n_c = g.detector_shape
        n_in = len(self.out_shape if adjoint else self.in_shape)
        lead = t.shape[: t.ndim - n_in]
        batch = math.prod(lead)
        calc_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        work = t.reshape(batch, *t.shape[t.ndim - n_in:])
        if work.dtype != calc_dtype:
            work = work.to(calc_dtype)
        n_views = g.n_angles
        chunk, row_block = self._chunks(batch)
        if adjoint:
            out = torch.zeros(batch, n_z, n_y * n_x, dtype=calc_dtype, device=t.device)
        else:
            flat = work.reshape(batch, n_z, n_y * n_x)
            out = torch.empty(batch, *g.projection_shape, dtype=calc_dtype, device=t.device)
        for a0 in range(0, n_views, chunk):
            a1 = min(n_views, a0 + chunk)
            planes = self._plane_samples(a0, a1, calc_dtype, t.device)
            q_idx, q_w = planes["q_idx"], planes["q_w"]
            n_sheet = q_idx.shape[0]
            if adjoint:
                sheet = torch.zeros(batch, n_sheet * n_z, dtype=calc_dtype, device=t.device)
                for r0 in range(0, n_r, row_block):
                    r1 = min(n_r, r0 + row_block)
                    k_idx, k_w = self._slice_samples(planes, r0, r1)
                    # stage 2ᵀ: spread each ray value over its (plane, slice) samples of the sheet
                    contrib = work[:, a0:a1, r0:r1].reshape(batch, -1, 1) * k_w[None]
                    sheet.index_add_(1, k_idx.reshape(-1), contrib.reshape(batch, -1))
                # stage 1ᵀ: spread the sheet over the two minor-axis neighbours in every slice
                sheet = sheet.reshape(batch, n_sheet, n_z).transpose(1, 2)  # (B, D, A·C·P)
                for b in range(2):
                    out.index_add_(2, q_idx[:, b], sheet * q_w[:, b])
            else:
                sheet = (torch.index_select(flat, 2, q_idx[:, 0]) * q_w[:, 0]
                         + torch.index_select(flat, 2, q_idx[:, 1]) * q_w[:, 1])  # (B, D, A·C·P)
                sheet = sheet.transpose(1, 2).reshape(batch, -1)  # (B, A·C·P·D), slice fastest
                for r0 in range(0, n_r, row_block):
                    r1 = min(n_r, r0 + row_block)
                    k_idx, k_w = self._slice_samples(planes, r0, r1)
                    vals = torch.index_select(sheet, 1, k_idx.reshape(-1)).reshape(batch, *k_w.shape)
                    out[:, a0:a1, r0:r1] = (vals * k_w).sum(-1).reshape(batch, a1 - a0, r1 - r0, n_c)
        res = out.reshape(*lead, *(g.volume_shape if adjoint else g.projection_shape))
        return res if res.dtype == t.dtype else res.to(t.dtype)

    def _plane_samples(self, a0: int, a1: int, dtype: torch.dtype, device) -> dict:
        """Stage-1 factors of views ``a0:a1`` (A views, C columns, P = max(H, W) planes per ray).

        ``q_idx`` (int64, ``(A·C·P, 2)``) and ``q_w`` (``(A·C·P, 2)``) are the flat in-plane indices
        (row·W + column) of the two minor-axis neighbours of the sample of column c in plane p and
        their linear weights (zero outside the volume or for unused planes; such indices are clamped
        into range and never contribute). The ray parameters are kept for :meth:`_slice_samples`.
        """
        g = self.geometry
        nz, ny, nx = g.volume_shape
        n_cols = g.detector_shape[1]
        s_col = g.detector_spacing[1]
        src_d, det_d = g.source_distance, g.detector_distance
        kw = dict(dtype=dtype, device=device)

        theta = self.angles[a0:a1].to(**kw)
        sin, cos = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]  # (A,1,1)
        u = ((torch.arange(n_cols, **kw) - (n_cols - 1) / 2.0) * s_col)[None, :, None]  # (1,C,1)
        # source (z = 0) and in-plane ray direction (detector point − source)
        sx, sy = src_d * sin, -src_d * cos
        dx = -(src_d + det_d) * sin + u * cos  # (A,C,1)
        dy = (src_d + det_d) * cos + u * sin

        n_planes = max(nx, ny)
        p = torch.arange(n_planes, **kw)  # (P,)
        xdom = dx.abs() >= dy.abs()  # (A,C,1)
        plane = torch.where(xdom, p - (nx - 1) / 2.0, (ny - 1) / 2.0 - p)  # (A,C,P)
        d_dom = torch.where(xdom, dx, dy)
        t = (plane - torch.where(xdom, sx, sy)) / d_dom  # ray parameter at each plane, (A,C,P)
        minor = torch.where(xdom, (ny - 1) / 2.0 - (sy + t * dy), (sx + t * dx) + (nx - 1) / 2.0)

        n_minor = torch.where(xdom, ny, nx)
        stride_minor = torch.where(xdom, nx, 1)
        stride_plane = torch.where(xdom, 1, nx)
        plane_ok = p < torch.where(xdom, nx, ny)
        m0 = torch.floor(minor)
        wm = minor - m0
        m0i = m0.to(torch.int64)
        ok0 = ((m0i >= 0) & (m0i < n_minor) & plane_ok).to(dtype)
        ok1 = ((m0i >= -1) & (m0i < n_minor - 1) & plane_ok).to(dtype)
        q0 = m0i * stride_minor + p.to(torch.int64) * stride_plane
        q_idx = torch.stack((q0, q0 + stride_minor), dim=-1).clamp_(0, ny * nx - 1).reshape(-1, 2)
        q_w = torch.stack(((1 - wm) * ok0, wm * ok1), dim=-1).reshape(-1, 2)
        return {"q_idx": q_idx, "q_w": q_w, "t": t, "len2": dx * dx + dy * dy, "d_dom": d_dom.abs()}

    def _slice_samples(self, planes: dict, r0: int, r1: int) -> tuple[Tensor, Tensor]:
        """Stage-2 factors for detector rows ``r0:r1``, both of shape ``(A·R·C, P·2)``.

        ``k_idx`` (int64) indexes the sheet ``(A·C·P, D)`` flattened slice-fastest; ``k_w`` holds the
        slice-axis linear weights times the step length |d − s| / |(d − s)_dominant| (zero, with a
        clamped index, outside the volume).
        """
        g = self.geometry
        nz = g.volume_shape[0]
        n_rows = g.detector_shape[0]
        s_row = g.detector_spacing[0]
        t = planes["t"]  # (A,C,P)
        n_a, n_cols, n_planes = t.shape
        kw = dict(dtype=t.dtype, device=t.device)
        v = (torch.arange(r0, r1, **kw) - (n_rows - 1) / 2.0) * s_row  # (R,) detector z of each row
        fz = t[:, None] * v[None, :, None, None] + (nz - 1) / 2.0  # (A,R,C,P)
        k0 = torch.floor(fz)
        wk = fz - k0
        k0i = k0.to(torch.int64)
        okk0 = ((k0i >= 0) & (k0i < nz)).to(t.dtype)
        okk1 = ((k0i >= -1) & (k0i < nz - 1)).to(t.dtype)
        step = torch.sqrt(planes["len2"][:, None] + v[None, :, None, None] ** 2)
        step = step / planes["d_dom"][:, None]  # (A,R,C,1)
        k_w = torch.stack(((1 - wk) * okk0, wk * okk1), dim=-1) * step[..., None]  # (A,R,C,P,2)
        sheet_row = torch.arange(n_a * n_cols * n_planes, device=t.device).reshape(n_a, 1, n_cols, n_planes)
        k_idx = (sheet_row * nz + k0i)[..., None] + torch.arange(2, device=t.device)
        k_idx = k_idx.clamp_(0, n_a * n_cols * n_planes * nz - 1)
        n_rays = n_a * (r1 - r0) * n_cols
        return k_idx.reshape(n_rays, n_planes * 2), k_w.reshape(n_rays, n_planes * 2)


class _AstraCone:
    """ASTRA ``cuda3d`` projector for one ConeGeometry; the projector handle is freed with the object.

    Axis mapping. ASTRA stores volumes as (z, y, x) = our (D, H, W) and projections as
    (det_row, angle, det_col); its 3D kernels put array row i at y = i − (H − 1)/2 (y grows with the
    row index), the opposite of our (and ASTRA 2D's) y = (H − 1)/2 − i. We therefore hand ASTRA the
    geometry mirrored in y (a ``cone_vec`` geometry with the y components of source, detector centre
    and detector u-axis negated): mirroring the world maps ASTRA's row i onto our row i, with no
    copy or flip of the data. Line integrals are unchanged by the reflection.
    """

    def __init__(self, geometry: ConeGeometry):
        astra = require("astra", "astra")
        self._experimental = require("astra.experimental", "astra")  # not imported by `import astra`
        g = geometry
        th = g.angles
        s, d = g.source_distance, g.detector_distance
        s_row, s_col = g.detector_spacing
        vec = np.zeros((th.size, 12), dtype=np.float64)
        # source, detector centre, u (column) step, v (row) step — y components mirrored (see above)
        vec[:, 0], vec[:, 1] = s * np.sin(th), s * np.cos(th)
        vec[:, 3], vec[:, 4] = -d * np.sin(th), -d * np.cos(th)
        vec[:, 6], vec[:, 7] = s_col * np.cos(th), -s_col * np.sin(th)
        vec[:, 11] = s_row
        n_z, n_y, n_x = g.volume_shape
        self.vol_geom = astra.create_vol_geom(n_y, n_x, n_z)  # (rows, cols, slices) → data (z, y, x)
        self.proj_geom = astra.create_proj_geom("cone_vec", g.detector_shape[0], g.detector_shape[1], vec)
        self.projector_id = astra.create_projector("cuda3d", self.proj_geom, self.vol_geom)
        self.volume_shape = g.volume_shape
        self.astra_proj_shape = (g.detector_shape[0], th.size, g.detector_shape[1])
        self._finalizer = weakref.finalize(self, astra.projector3d.delete, self.projector_id)

    def forward(self, x: Tensor) -> Tensor:
        exp = self._experimental
        lead = x.shape[:-3]
        vols = x.detach().reshape(-1, *self.volume_shape).to(torch.float32)
        out = torch.empty(vols.shape[0], *self.astra_proj_shape, dtype=torch.float32, device=x.device)
        torch.cuda.synchronize(x.device)  # ASTRA runs outside torch's stream order: fence both sides
        for b in range(vols.shape[0]):  # one call per volume: ASTRA's FP is 3-D only
            exp.direct_FP3D(self.projector_id, vols[b].contiguous(), out[b])
        torch.cuda.synchronize(x.device)
        # (det_row, angle, det_col) → (angle, det_row, det_col)
        res = out.permute(0, 2, 1, 3).contiguous()
        return res.reshape(*lead, *res.shape[1:]).to(x.dtype)

    def backward(self, y: Tensor) -> Tensor:
        exp = self._experimental
        lead = y.shape[:-3]
        n_a, n_r, n_c = y.shape[-3:]
        projs = y.detach().reshape(-1, n_a, n_r, n_c).to(torch.float32).permute(0, 2, 1, 3).contiguous()
        out = torch.empty(projs.shape[0], *self.volume_shape, dtype=torch.float32, device=y.device)
        torch.cuda.synchronize(y.device)
        for b in range(projs.shape[0]):
            exp.direct_BP3D(self.projector_id, out[b], projs[b])
        torch.cuda.synchronize(y.device)
        return out.reshape(*lead, *self.volume_shape).to(y.dtype)
