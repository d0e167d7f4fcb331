"""ConeBeam3D: analytic line integrals, FDK accuracy, backends and errors.

The conformance suite (dot test, autograd, gradcheck) runs on the registry entries in
``registry_cone.py``; these tests check the geometry and reconstruction quality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffrecon.errors import GeometryError, InputDataError
from diffrecon.operators.cone import ConeBeam3D
from diffrecon.operators.geometry import ConeGeometry
from diffrecon.recon.analytic import fbp, fdk

# 3D Shepp–Logan-like head (after Kak & Slaney's 3D version): value, centre (x, y, z), semi-axes
# (a, b, c), rotation about z (degrees); lengths in units of the volume half-width.
ELLIPSOIDS = [
    (1.0, (0.0, 0.0, 0.0), (0.69, 0.92, 0.81), 0.0),
    (-0.8, (0.0, -0.0184, 0.0), (0.6624, 0.874, 0.78), 0.0),
    (-0.2, (0.22, 0.0, 0.0), (0.11, 0.31, 0.22), -18.0),
    (-0.2, (-0.22, 0.0, 0.0), (0.16, 0.41, 0.28), 18.0),
    (0.2, (0.0, 0.35, -0.15), (0.21, 0.25, 0.41), 0.0),
    (0.2, (0.0, 0.1, 0.25), (0.046, 0.046, 0.05), 0.0),
    (0.2, (0.0, -0.1, 0.25), (0.046, 0.046, 0.05), 0.0),
]


def _frames(n: int):
    half = 0.5 * n * 0.9
    for val, c, ax, phi in ELLIPSOIDS:
        p = math.radians(phi)
        rot = np.array([[math.cos(p), -math.sin(p), 0.0], [math.sin(p), math.cos(p), 0.0], [0.0, 0.0, 1.0]])
        yield val, np.asarray(c) * half, np.diag(1.0 / (np.asarray(ax) * half)) @ rot.T


def phantom_volume(n: int, supersample: int = 3) -> np.ndarray:
    """Area-averaged rasterisation on the (n, n, n) grid of the geometry conventions (z, y, x)."""
    f = (np.arange(n * supersample) + 0.5) / supersample - n / 2.0
    z, y, x = np.meshgrid(f, -f, f, indexing="ij")
    pts = np.stack([x, y, z], -1)
    vol = np.zeros(x.shape)
    for val, c, m in _frames(n):
        q = (pts - c) @ m.T
        vol += val * ((q ** 2).sum(-1) <= 1)
    s = supersample
    return vol.reshape(n, s, n, s, n, s).mean((1, 3, 5))


def cone_rays(geom: ConeGeometry):
    """Source points and unit directions of every detector pixel, shape (A, R, C, 3)."""
    th = geom.angles[:, None, None]
    n_r, n_c = geom.detector_shape
    s_r, s_c = geom.detector_spacing
    u = ((np.arange(n_c) - (n_c - 1) / 2.0) * s_c)[None, None, :]
    v = ((np.arange(n_r) - (n_r - 1) / 2.0) * s_r)[None, :, None]
    s, d = geom.source_distance, geom.detector_distance
    src = np.stack(np.broadcast_arrays(s * np.sin(th), -s * np.cos(th), 0 * th + 0 * u + 0 * v), -1)
    det = np.stack(np.broadcast_arrays(-d * np.sin(th) + u * np.cos(th), d * np.cos(th) + u * np.sin(th),
                                       v + 0 * th + 0 * u), -1)
    ray = det - src
    return src, ray / np.linalg.norm(ray, axis=-1, keepdims=True)


def analytic_cone_projections(geom: ConeGeometry) -> np.ndarray:
    src, dirs = cone_rays(geom)
    out = np.zeros(src.shape[:-1])
    for val, c, m in _frames(geom.volume_shape[-1]):
        q0 = (src - c) @ m.T
        e = dirs @ m.T
        a = (e * e).sum(-1)
        b = (q0 * e).sum(-1)
        cc = (q0 * q0).sum(-1) - 1.0
        out += val * 2.0 * np.sqrt(np.clip(b * b - a * cc, 0.0, None)) / a
    return out


def psnr(recon, truth) -> float:
    recon = recon.detach().cpu().double().numpy() if isinstance(recon, torch.Tensor) else recon
    data_range = truth.max() - truth.min()
    return 10.0 * math.log10(data_range ** 2 / float(((recon - truth) ** 2).mean()))


# -----------------------------------------------------------------------------------------------
# forward projection
# -----------------------------------------------------------------------------------------------
def test_ball_chord_lengths():
    n, r = 32, 10.0
    s = 4  # supersampled rasterisation of a uniform ball of radius r centred at the origin
    f = (np.arange(n * s) + 0.5) / s - n / 2.0
    z, y, x = np.meshgrid(f, f, f, indexing="ij")
    ball = ((x ** 2 + y ** 2 + z ** 2) <= r * r).reshape(n, s, n, s, n, s).mean((1, 3, 5))
    angles = [0.0, 0.4, math.pi / 4, 2.0]
    op = ConeBeam3D((n, n, n), angles, 60.0, 40.0, (41, 49), (1.0, 1.0), backend="torch")
    proj = op(torch.as_tensor(ball, dtype=torch.float64))
    assert proj.shape == (4, 41, 49)
    src, dirs = cone_rays(op.geometry)
    dist = np.linalg.norm(np.cross(src, dirs), axis=-1)  # distance of each ray from the ball centre
    chord = 2.0 * np.sqrt(np.clip(r * r - dist ** 2, 0.0, None))
    # the central pixel sees the diameter; a few pixels across the detector see shorter chords
    np.testing.assert_allclose(proj[:, 20, 24].numpy(), 2 * r, rtol=0.015)
    for row, col in [(20, 30), (26, 24), (14, 18), (28, 31), (20, 24 + 11)]:
        np.testing.assert_allclose(proj[:, row, col].numpy(), chord[:, row, col], rtol=0.02, atol=0.05)
    # everywhere (including grazing rays, where the rasterised edge matters) within half a voxel
    assert np.abs(proj.numpy() - chord).mean() < 0.25
    assert np.abs(proj.numpy() - chord).max() < 3.0


def test_ones_volume_gives_box_intersections():
    # a central ray through a W-wide box at θ = 0 (rays along y) has length H; at θ = π/2 length W
    op = ConeBeam3D((5, 6, 8), [0.0, math.pi / 2], 30.0, 20.0, (5, 9), backend="torch")
    proj = op(torch.ones(5, 6, 8, dtype=torch.float64))
    assert abs(float(proj[0, 2, 4]) - 6.0) < 1e-9
    assert abs(float(proj[1, 2, 4]) - 8.0) < 1e-9


def test_from_geometry_and_repr():
    geom = ConeGeometry((4, 6, 6), np.linspace(0, math.pi, 5), 30.0, 10.0, (4, 8), (1.5, 1.25))
    op = ConeBeam3D.from_geometry(geom)
    assert op.geometry.to_dict() == geom.to_dict()
    assert op.in_shape == (4, 6, 6) and op.out_shape == (5, 4, 8)
    assert ConeBeam3D.from_geometry(geom.to_dict()).geometry.to_dict() == geom.to_dict()
    assert "backend='auto'" in repr(op)
    x = torch.rand(4, 6, 6, dtype=torch.float64)
    # result independent of the view chunking
    torch.testing.assert_close(op(x), ConeBeam3D.from_geometry(geom, chunk_samples=1)(x))


def test_mid_plane_matches_fan_beam():
    ct = pytest.importorskip("diffrecon.operators.ct")
    rng = np.random.default_rng(0)
    img = rng.random((12, 14))
    angles = np.linspace(0, 2 * math.pi, 7, endpoint=False)
    cone = ConeBeam3D((1, 12, 14), angles, 40.0, 25.0, (1, 30), backend="torch")
    fan = ct.FanBeam2D((12, 14), angles, 40.0, 25.0, 30)
    got = cone(torch.as_tensor(img)[None])[:, 0]
    want = fan(torch.as_tensor(img))
    # both are Joseph-type projectors; ours picks the dominant axis per ray, so allow small deviations
    assert float((got - want).norm() / want.norm()) < 0.02


# -----------------------------------------------------------------------------------------------
# FDK
# -----------------------------------------------------------------------------------------------
FDK_MIN_PSNR = 28.0  # analytic projections of the 32³ head, 90 views over 2π, cone half-angle ≈ 9°


def test_fdk_analytic_phantom():
    n = 32
    op = ConeBeam3D((n, n, n), np.arange(90) * (2 * math.pi / 90), 100.0, 60.0, (51, 64))
    proj = torch.as_tensor(analytic_cone_projections(op.geometry), dtype=torch.float32)
    truth = phantom_volume(n)
    rec = fdk(proj, op)
    assert rec.shape == (n, n, n) and rec.dtype == torch.float32
    value = psnr(rec, truth)
    print(f"\nFDK PSNR (32³ head phantom, 90 views, analytic projections): {value:.2f} dB")
    assert value > FDK_MIN_PSNR
    # the mid-plane is exact up to discretisation: mean intensity matches
    mid = rec[n // 2].double().numpy()
    assert abs(mid.mean() / truth[n // 2].mean() - 1.0) < 0.03


def test_fdk_of_operator_output_and_short_scan():
    n = 24
    s, d, det = 80.0, 40.0, (36, 48)
    truth = phantom_volume(n, supersample=2)
    x = torch.as_tensor(truth, dtype=torch.float32)
    full = ConeBeam3D((n, n, n), np.arange(72) * (2 * math.pi / 72), s, d, det)
    proj = full(x)
    rec = fdk(proj, full)
    value_full = psnr(rec, truth)
    torch.testing.assert_close(fbp(proj, full.geometry), rec)  # fbp dispatches to fdk for cone geometries
    fan = 2 * math.atan(0.5 * det[1] / (s + d))
    step = 2 * math.pi / 144
    short = ConeBeam3D((n, n, n), np.arange(int(math.ceil((math.pi + fan) / step)) + 1) * step, s, d, det)
    value_short = psnr(fdk(short(x), short), truth)
    print(f"\nFDK of ConeBeam3D output (24³): full scan {value_full:.2f} dB, "
          f"Parker short scan {value_short:.2f} dB")
    assert value_full > 25.0
    assert value_short > value_full - 3.0


# -----------------------------------------------------------------------------------------------
# backends and errors
# -----------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(InputDataError, match="backend"):
        ConeBeam3D((2, 3, 3), [0.0], 10.0, 5.0, (2, 4), backend="cuda")
    with pytest.raises(GeometryError, match="source_distance"):
        ConeBeam3D((2, 30, 30), [0.0], 10.0, 5.0, (2, 4))
    with pytest.raises(GeometryError, match="ConeGeometry"):
        ConeBeam3D.from_geometry("cone")
    op = ConeBeam3D((2, 3, 3), [0.0, 1.0], 10.0, 5.0, (2, 4))
    with pytest.raises(InputDataError, match=r"expected trailing shape \(2, 3, 3\)"):
        op(torch.zeros(3, 3, 2))
    astra_op = ConeBeam3D((2, 3, 3), [0.0, 1.0], 10.0, 5.0, (2, 4), backend="astra")
    with pytest.raises(InputDataError, match="CUDA tensor"):
        astra_op(torch.zeros(2, 3, 3))  # refused before any ASTRA 3D call (those need a GPU)


def test_auto_backend_uses_torch_on_cpu():
    op = ConeBeam3D((3, 4, 5), [0.2, 1.0], 12.0, 6.0, (3, 7))
    x = torch.rand(3, 4, 5, dtype=torch.float64)
    forced = ConeBeam3D((3, 4, 5), [0.2, 1.0], 12.0, 6.0, (3, 7), backend="torch")
    torch.testing.assert_close(op(x), forced(x))


@pytest.mark.cuda
def test_torch_backend_cuda_matches_cpu():
    op = ConeBeam3D((6, 8, 10), np.linspace(0, 2 * math.pi, 9), 30.0, 20.0, (8, 16), backend="torch")
    x = torch.rand(2, 6, 8, 10)
    y = torch.rand(2, 9, 8, 16)
    torch.testing.assert_close(op.to("cuda")(x.cuda()).cpu(), op.to("cpu")(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op.to("cuda").adjoint(y.cuda()).cpu(), op.to("cpu").adjoint(y),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.astra
def test_astra_backend_agrees_with_torch():
    astra = pytest.importorskip("astra")
    if not astra.use_cuda():
        pytest.skip("ASTRA without CUDA support")
    n = 32
    angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    ref = ConeBeam3D((n, n, n), angles, 90.0, 60.0, (40, 56), backend="torch").cuda()
    ast = ConeBeam3D((n, n, n), angles, 90.0, 60.0, (40, 56), backend="astra").cuda()
    x = torch.as_tensor(phantom_volume(n, supersample=2), dtype=torch.float32, device="cuda")
    x = torch.stack([x, x.flip(-2)])  # batch of two; the flip catches a y-axis mix-up
    p_ref, p_ast = ref(x), ast(x)
    assert p_ast.shape == p_ref.shape == (2, 24, 40, 56)
    assert float((p_ast - p_ref).norm() / p_ref.norm()) < 0.03
    # BP is only approximately the adjoint of FP in ASTRA: dot test to a few per cent
    y = torch.rand_like(p_ref)
    lhs = float((ast(x) * y).sum())
    rhs = float((x * ast.adjoint(y)).sum())
    assert abs(lhs - rhs) / abs(lhs) < 0.05
    assert float((ast.adjoint(y) - ref.adjoint(y)).norm() / ref.adjoint(y).norm()) < 0.1
    # autograd through the ASTRA path returns its back projection
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((ast(xg) * y).sum(), xg)
    torch.testing.assert_close(g, ast.adjoint(y))
    # auto picks ASTRA on CUDA tensors
    auto = ConeBeam3D((n, n, n), angles, 90.0, 60.0, (40, 56)).cuda()
    torch.testing.assert_close(auto(x), p_ast)


def test_fdk_chunking_invariant(monkeypatch):
    import diffrecon.recon.analytic as fbp_module

    op = ConeBeam3D((5, 6, 7), np.linspace(0, 2 * math.pi, 8, endpoint=False), 30.0, 20.0, (6, 12))
    proj = torch.rand(2, *op.out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = fdk(proj, op)
    monkeypatch.setattr(fbp_module, "_CHUNK_SAMPLES", 50)  # one view and one slice at a time
    torch.testing.assert_close(fdk(proj, op), whole)
    torch.testing.assert_close(fdk(proj[1], op), whole[1])


class _FakeAstra:
    """Stand-in for the ASTRA calls of the astra backend, following ASTRA's 3D conventions as its CUDA
    kernels (``cuda/3d/cone_fp.cu``) implement them.

    ``direct_FP3D`` integrates a ``cone_vec`` geometry by dense trilinear sampling, with ASTRA's 3D
    voxel layout: data (z, y, x), voxel (k, i, j) at (j − (W−1)/2, i − (H−1)/2, k − (D−1)/2) (y grows
    with the row index, unlike 2D), projections (det_row, angle, det_col), pixel (r, c) at
    d + (c − (n_c−1)/2)·u + (r − (n_r−1)/2)·v. It lets the CPU test check the backend's vector
    geometry, axis mapping and bookkeeping without touching ASTRA's GPU code.
    """

    def __init__(self):
        from types import SimpleNamespace

        self.projectors = {}
        self.experimental = SimpleNamespace(direct_FP3D=self.direct_fp3d)
        self.projector3d = SimpleNamespace(delete=lambda pid: self.projectors.pop(pid, None))

    @staticmethod
    def create_vol_geom(rows, cols, slices):
        return {"rows": rows, "cols": cols, "slices": slices}

    @staticmethod
    def create_proj_geom(kind, det_rows, det_cols, vectors):
        assert kind == "cone_vec"
        return {"det_rows": det_rows, "det_cols": det_cols, "vectors": np.asarray(vectors)}

    def create_projector(self, kind, proj_geom, vol_geom):
        assert kind == "cuda3d"
        pid = len(self.projectors) + 1
        self.projectors[pid] = (proj_geom, vol_geom)
        return pid

    def direct_fp3d(self, pid, vol, proj):
        from scipy.ndimage import map_coordinates

        pg, vg = self.projectors[pid]
        vol = vol.numpy().astype(np.float64)
        assert vol.shape == (vg["slices"], vg["rows"], vg["cols"])
        n_z, n_y, n_x = vol.shape
        vec = pg["vectors"]
        n_r, n_c = pg["det_rows"], pg["det_cols"]
        assert tuple(proj.shape) == (n_r, vec.shape[0], n_c)
        c = np.arange(n_c) - (n_c - 1) / 2.0
        r = np.arange(n_r) - (n_r - 1) / 2.0
        step = 0.05
        for a, (src, det, u, v) in enumerate(vec.reshape(-1, 4, 3)):
            pix = det + c[None, :, None] * u + r[:, None, None] * v  # (R, C, 3)
            ray = pix - src
            length = np.linalg.norm(ray, axis=-1, keepdims=True)
            t0 = np.linalg.norm(src) - 0.5 * np.sqrt(n_x ** 2 + n_y ** 2 + n_z ** 2)
            ts = t0 + step * np.arange(int(np.sqrt(n_x ** 2 + n_y ** 2 + n_z ** 2) / step) + 2)
            pts = src + (ray / length)[..., None, :] * ts[:, None]  # (R, C, T, 3)
            coords = np.stack([pts[..., 2] + (n_z - 1) / 2.0, pts[..., 1] + (n_y - 1) / 2.0,
                               pts[..., 0] + (n_x - 1) / 2.0])
            vals = map_coordinates(vol, coords.reshape(3, -1), order=1, mode="constant", cval=0.0)
            proj[:, a, :] = torch.as_tensor(vals.reshape(n_r, n_c, -1).sum(-1) * step, dtype=proj.dtype)


def test_astra_backend_geometry_with_stand_in(monkeypatch):
    import diffrecon.operators.cone as cone_module

    fake = _FakeAstra()
    monkeypatch.setattr(cone_module, "require", lambda name, extra: fake.experimental
                        if name == "astra.experimental" else fake)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    geom = ConeGeometry((6, 9, 11), np.array([0.3, 1.4, 2.2, 4.0]), 30.0, 20.0, (10, 18), (1.2, 1.1))
    impl = cone_module._AstraCone(geom)
    x = torch.zeros(6, 9, 11, dtype=torch.float64)
    x[1:4, 1:4, 2:9] = 1.0  # asymmetric block: a y or z mix-up shows up as a large error
    x[4, 6, 7] = 3.0
    ref = ConeBeam3D.from_geometry(geom, backend="torch")(x)
    got = impl.forward(x[None])[0]
    assert got.shape == ref.shape and got.dtype == x.dtype
    assert float((got - ref).norm() / ref.norm()) < 0.03
