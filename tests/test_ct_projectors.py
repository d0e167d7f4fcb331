"""2D CT projectors: agreement with ASTRA, matrix vs matrix-free, analytic chords, errors, SliceWise.

The generic checks (dot test, linearity, autograd = adjoint, gradcheck) run in
``test_conformance.py`` over the entries of ``registry_ct.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffrecon.errors import GeometryError, InputDataError
from diffrecon.operators import SliceWise
from diffrecon.operators.ct import (
    FanBeam2D,
    ParallelBeam2D,
    clear_matrix_cache,
    limited_angles,
    operator_from_geometry,
    sparse_angles,
)
from diffrecon.operators.geometry import (
    FanGeometry,
    ParallelGeometry,
    default_n_detectors,
    geometry_from_dict,
)


def _phantom(h: int, w: int) -> np.ndarray:
    """An asymmetric test image: off-centre ellipse, a bright bar near the top-left, a ramp."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = (((xx - 0.6 * w) / (0.3 * w)) ** 2 + ((yy - 0.55 * h) / (0.35 * h)) ** 2 < 1).astype(np.float64)
    img[2:6, 3 : w // 2] += 2.0
    img += 0.5 * xx / w * (yy > h / 2)
    return img.astype(np.float32)


# --------------------------------------------------------------------------------------------- ASTRA


def _astra_sino(astra, img, proj_geom, kind):
    vg = astra.create_vol_geom(*img.shape)
    pid = astra.create_projector(kind, proj_geom, vg)
    try:
        sid, sino = astra.create_sino(img, pid)
        astra.data2d.delete(sid)
        return sino, pid
    except Exception:
        astra.projector.delete(pid)
        raise


@pytest.mark.astra
def test_parallel_matches_astra_linear():
    # Measured: relative L2 error 2.0e-6 (forward) and 1.6e-6 (back-projection) here, ≈ 1e-5 on
    # 256×256 × 180 views (float32). ASTRA steps
    # the crossing point incrementally in float32 (c += Δc); we evaluate it directly in float64.
    # A flipped/transposed convention would give errors of order 0.3.
    astra = pytest.importorskip("astra")
    h, w = 48, 40
    img = _phantom(h, w)
    angles = np.concatenate([sparse_angles(30), [math.pi / 4, 3 * math.pi / 4, 1.2 * math.pi]])
    A = ParallelBeam2D((h, w), angles, 70, 0.9)
    pg = astra.create_proj_geom("parallel", 0.9, 70, A.geometry.angles)
    ref, pid = _astra_sino(astra, img, pg, "linear")
    try:
        y = A(torch.from_numpy(img)).numpy()
        rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        assert rel < 1e-4, rel
        # detector direction is not flipped
        assert np.linalg.norm(y[:, ::-1] - ref) / np.linalg.norm(ref) > 0.1
        bid, bp = astra.create_backprojection(ref.astype(np.float32), pid)
        astra.data2d.delete(bid)
        ours = A.adjoint(torch.from_numpy(ref.astype(np.float32))).numpy()
        assert np.linalg.norm(ours - bp) / np.linalg.norm(bp) < 1e-4
    finally:
        astra.projector.delete(pid)


@pytest.mark.astra
def test_fan_close_to_astra_line_fanflat():
    # ASTRA's CPU fan-beam kernels are the line-intersection kernel (line_fanflat) and the strip
    # kernel (strip_fanflat), not Joseph's. Same geometry conventions, different discretisation:
    # measured relative L2 error 1.8 % vs line_fanflat on this image (0.6 % vs strip_fanflat).
    # A convention mismatch would give > 30 %.
    astra = pytest.importorskip("astra")
    h, w = 48, 40
    img = _phantom(h, w)
    F = FanBeam2D((h, w), sparse_angles(40) * 2, 120.0, 80.0, 90, 1.2)
    pg = astra.create_proj_geom("fanflat", 1.2, 90, F.geometry.angles, 120.0, 80.0)
    ref, pid = _astra_sino(astra, img, pg, "line_fanflat")
    astra.projector.delete(pid)
    y = F(torch.from_numpy(img)).numpy()
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel < 0.04, rel
    assert np.linalg.norm(y[:, ::-1] - ref) / np.linalg.norm(ref) > 0.1


# --------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda b: ParallelBeam2D((23, 31), sparse_angles(17), memory_budget_bytes=b),
        lambda b: ParallelBeam2D((20, 12), limited_angles(180, 15), 25, 0.7, memory_budget_bytes=b),
        lambda b: FanBeam2D(
            (21, 26),
            np.linspace(0, 2 * math.pi, 19, endpoint=False),
            40.0,
            25.0,
            45,
            1.1,
            memory_budget_bytes=b,
        ),
        lambda b: ParallelBeam2D(
            (16, 15), [math.pi / 2, 0.0, math.pi, math.pi / 4, 2.0], 30, 2.5, memory_budget_bytes=b
        ),
        lambda b: ParallelBeam2D((9, 7), [0.3, 1.2], 1, 2.5, memory_budget_bytes=b),
    ],
    ids=["parallel", "parallel-limited", "fan", "parallel-coarse", "parallel-1bin"],
)
def test_matrix_free_equals_matrix(make, dtype):
    dense, free = make(1 << 30), make(0)
    assert dense.uses_matrix(dtype) and not free.uses_matrix(dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *dense.in_shape, generator=g, dtype=dtype)
    y = torch.randn(3, *dense.out_shape, generator=g, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(free(x), dense(x), **tol)
    torch.testing.assert_close(free.adjoint(y), dense.adjoint(y), **tol)


def test_system_matrix_layout_and_cache():
    clear_matrix_cache()
    A = ParallelBeam2D((9, 7), sparse_angles(5), 13)
    M, MT = A.system_matrix(torch.float64)
    assert M.layout == torch.sparse_csr and MT.layout == torch.sparse_csr
    assert M.shape == (5 * 13, 63) and MT.shape == (63, 5 * 13)
    assert M.col_indices().dtype == torch.int32 and M.values().dtype == torch.float64
    torch.testing.assert_close(MT.to_dense(), M.to_dense().T)
    # the same geometry (even from a new operator) reuses the cached matrices
    B = ParallelBeam2D((9, 7), sparse_angles(5), 13)
    assert B.system_matrix(torch.float64)[0] is M
    # the column-sum of one view is the ray length through the image: rows of A sum to chords
    x = torch.randn(2, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(A(x).reshape(2, -1), (M @ x.reshape(2, -1).T).T)
    # the estimate used to pick the path bounds the real size
    real = sum(m.values().numel() * 12 + m.crow_indices().numel() * 4 for m in (M, MT))
    assert A.matrix_nbytes(torch.float64) >= real


# --------------------------------------------------------------------------------------------- physics


def _disc(n: int, radius: float, sub: int = 8) -> np.ndarray:
    """Pixel-coverage image of a centred disc (sub×sub supersampling)."""
    t = (np.arange(n * sub) + 0.5) / sub - n / 2
    yy, xx = np.meshgrid(t, t, indexing="ij")
    inside = (xx**2 + yy**2 < radius**2).astype(np.float64)
    return inside.reshape(n, sub, n, sub).mean(axis=(1, 3))


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_uniform_disc_gives_chord_lengths(kind):
    n, radius = 64, 20.0
    img = torch.from_numpy(_disc(n, radius))
    angles = sparse_angles(12)
    if kind == "parallel":
        A = ParallelBeam2D((n, n), angles, 91, 1.0)
        p = A.geometry.detector_offsets()  # distance of each ray from the centre
    else:
        S, D = 150.0, 100.0
        A = FanBeam2D((n, n), angles, S, D, 91, 1.5)
        u = A.geometry.detector_offsets()
        p = S * u / np.hypot(S + D, u)  # distance from the centre of the line source → bin
    chord = 2 * np.sqrt(np.clip(radius**2 - p**2, 0, None))
    y = A(img).numpy()
    assert y.shape == (12, 91)
    inner = np.abs(p) < radius - 2  # away from the rim, where pixelation dominates
    err = np.abs(y[:, inner] - chord[inner]).max()
    assert err < 0.02 * 2 * radius, err
    # every view conserves mass: ∫ y dp = ∫∫ f, with dp the spacing of the rays at the centre
    if kind == "parallel":
        dp = np.full(91, A.geometry.detector_spacing)
    else:
        u = A.geometry.detector_offsets()
        dp = A.geometry.detector_spacing * S * (S + D) ** 2 / ((S + D) ** 2 + u**2) ** 1.5
    np.testing.assert_allclose((y * dp).sum(axis=1), img.sum().item(), rtol=2e-3)


def test_conventions_single_pixel():
    # pixel (row 0, col W−1) sits at x = (W−1)/2, y = +(H−1)/2 (y up the rows)
    h, w = 6, 5
    x = torch.zeros(h, w, dtype=torch.float64)
    x[0, w - 1] = 1.0
    A = ParallelBeam2D((h, w), [0.0, math.pi / 2], 9)
    y = A(x)
    # θ = 0: bin along (1, 0) → u = x = 2 → bin 6;  θ = π/2: u = y = 2.5 → bins 6, 7 half each
    torch.testing.assert_close(y[0], torch.eye(9, dtype=torch.float64)[6])
    torch.testing.assert_close(y[1, 6:8], torch.tensor([0.5, 0.5], dtype=torch.float64))


# --------------------------------------------------------------------------------------------- errors


def test_geometry_errors():
    with pytest.raises(GeometryError, match="zero"):
        ParallelBeam2D((8, 8), [])
    with pytest.raises(GeometryError, match="finite"):
        ParallelBeam2D((8, 8), [0.0, float("nan")])
    with pytest.raises(GeometryError, match="finite"):
        FanBeam2D((8, 8), [0.0, float("inf")], 20.0, 10.0, 12)
    with pytest.raises(GeometryError, match="source_distance"):
        FanBeam2D((8, 8), [0.0], 3.0, 10.0, 12)
    with pytest.raises(GeometryError, match="detector_distance"):
        FanBeam2D((8, 8), [0.0], 30.0, -1.0, 12)
    with pytest.raises(GeometryError, match="n_detectors"):
        ParallelBeam2D((8, 8), [0.0], 0)
    with pytest.raises(GeometryError):
        operator_from_geometry({"kind": "helical"})


def test_shape_and_dtype_errors_name_the_geometry():
    A = ParallelBeam2D((8, 6), sparse_angles(4), 11)
    with pytest.raises(InputDataError) as exc:
        A.adjoint(torch.zeros(2, 5, 11))
    msg = str(exc.value)
    assert "(4, 11)" in msg and "(2, 5, 11)" in msg and "ParallelGeometry" in msg and "n_angles=4" in msg
    with pytest.raises(InputDataError, match="FanGeometry"):
        FanBeam2D((8, 6), sparse_angles(4), 30.0, 20.0, 11)(torch.zeros(6, 8))
    with pytest.raises(InputDataError, match="real floating"):
        A(torch.zeros(8, 6, dtype=torch.complex64))
    with pytest.raises(InputDataError, match="real floating"):
        A(torch.zeros(8, 6, dtype=torch.int64))


# --------------------------------------------------------------------------------------------- API


def test_from_geometry_round_trip_and_defaults():
    A = ParallelBeam2D((30, 20), limited_angles(90, 10))
    assert A.geometry.n_detectors == default_n_detectors((30, 20)) == 37
    assert A.out_shape == (9, 37)
    B = operator_from_geometry(geometry_from_dict(A.geometry.to_dict()))
    assert isinstance(B, ParallelBeam2D)
    x = torch.randn(30, 20)
    torch.testing.assert_close(A(x), B(x))
    fg = FanGeometry((10, 12), sparse_angles(6), 30.0, 15.0, 20, 1.2)
    F = operator_from_geometry(fg.to_dict())
    assert isinstance(F, FanBeam2D) and F.geometry == fg and hash(F.geometry) == hash(fg)
    assert F.geometry != FanGeometry((10, 12), sparse_angles(5), 30.0, 15.0, 20, 1.2)
    assert isinstance(FanBeam2D.from_geometry(fg), FanBeam2D)
    with pytest.raises(GeometryError):
        ParallelBeam2D.from_geometry(fg)
    assert isinstance(ParallelBeam2D.from_geometry(ParallelGeometry((4, 4), [0.0], 5)), ParallelBeam2D)


def test_batched_and_float64():
    A = ParallelBeam2D((10, 9), sparse_angles(7))
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    y = A(x)
    assert y.shape == (2, 3, 7, A.geometry.n_detectors) and y.dtype == torch.float64
    torch.testing.assert_close(y[1, 2], A(x[1, 2]))
    assert A.adjoint(y).shape == x.shape
    assert A(x[0, 0].float()).dtype == torch.float32


@pytest.mark.parametrize("axis", [0, 2])
def test_slicewise_parallel_on_volume(axis):
    A = ParallelBeam2D((12, 10), sparse_angles(5), 17)
    op = SliceWise(A, axis=axis)
    vol = torch.randn(4, 12, 10, dtype=torch.float64)  # (D, H, W) slices along axis 0
    vol = vol.movedim(0, axis)
    y = op(vol)
    assert y.shape == (4, 5, 17)
    for k in range(4):
        torch.testing.assert_close(y[k], A(vol.select(axis, k)))
    back = op.adjoint(y)
    assert back.shape == vol.shape
    # dot test on the volume operator
    z = torch.randn_like(y)
    lhs, rhs = (op(vol) * z).sum(), (vol * op.adjoint(z)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * abs(float(lhs))


def test_autograd_through_projector():
    A = ParallelBeam2D((8, 8), sparse_angles(6), memory_budget_bytes=0)
    x = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, A.geometry.n_detectors, dtype=torch.float64)
    loss = 0.5 * ((A(x) - y) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(x.grad, A.adjoint(A(x.detach()) - y))


def test_matrix_cache_is_bounded():
    from diffrecon.operators import ct

    clear_matrix_cache()
    for k in range(ct._CACHE.max_entries + 3):
        ParallelBeam2D((5, 4), sparse_angles(k + 1), 7)(torch.zeros(5, 4))
    assert len(ct._CACHE) == ct._CACHE.max_entries
    clear_matrix_cache()
    assert len(ct._CACHE) == 0
