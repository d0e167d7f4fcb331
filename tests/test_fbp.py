"""Filtered back projection: accuracy against ASTRA and scikit-image, filters, fan beam, errors.

The acceptance check (``test_parallel_fbp_matches_astra_and_iradon``) reconstructs a 256×256
Shepp–Logan from 180 parallel views and prints the PSNR of ours, ASTRA's CPU FBP and skimage's
``iradon``; run it with ``-s`` to see the numbers.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from diffrecon.errors import GeometryError, InputDataError
from diffrecon.operators.geometry import ConeGeometry, FanGeometry, ParallelGeometry
from diffrecon.recon.analytic import FILTERS, fbp, fdk
from diffrecon.recon.filters import frequency_response, padded_length

# Modified Shepp–Logan (Toft): value, semi-axes (a, b), centre (x, y), rotation (degrees), in units
# of the image half-width.
SHEPP_LOGAN = [
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
]


def _ellipse_frames(n: int):
    half = 0.5 * n * 0.95  # keep the phantom inside the reconstruction circle
    for val, a, b, cx, cy, phi in SHEPP_LOGAN:
        p = math.radians(phi)
        rot = np.array([[math.cos(p), -math.sin(p)], [math.sin(p), math.cos(p)]])
        m = np.diag([1 / (a * half), 1 / (b * half)]) @ rot.T  # world → unit-circle coordinates
        yield val, np.array([cx * half, cy * half]), m


def analytic_image(n: int, supersample: int = 4) -> np.ndarray:
    """The phantom rasterised on the (n, n) grid of the geometry conventions (area-averaged)."""
    f = (np.arange(n * supersample) + 0.5) / supersample - n / 2.0
    x, y = np.meshgrid(f, -f)  # rows run down, y up
    pts = np.stack([x, y], -1)
    img = np.zeros(x.shape)
    for val, c, m in _ellipse_frames(n):
        q = (pts - c) @ m.T
        img += val * ((q ** 2).sum(-1) <= 1)
    return img.reshape(n, supersample, n, supersample).mean((1, 3))


def analytic_projections(n: int, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Exact line integrals of the phantom along lines ``origin + t·direction`` (unit directions)."""
    out = np.zeros(origins.shape[:-1])
    for val, c, m in _ellipse_frames(n):
        q0 = (origins - c) @ m.T
        e = directions @ m.T
        a = (e * e).sum(-1)
        b = (q0 * e).sum(-1)
        cc = (q0 * q0).sum(-1) - 1.0
        out += val * 2.0 * np.sqrt(np.clip(b * b - a * cc, 0.0, None)) / a
    return out


def parallel_sinogram(geom: ParallelGeometry) -> np.ndarray:
    th = geom.angles[:, None]
    u = geom.detector_offsets()[None, :]
    origins = np.stack(np.broadcast_arrays(u * np.cos(th), u * np.sin(th)), -1)
    directions = np.stack(np.broadcast_arrays(np.sin(th) + 0 * u, -np.cos(th) + 0 * u), -1)
    return analytic_projections(geom.image_shape[0], origins, directions)


def fan_sinogram(geom: FanGeometry) -> np.ndarray:
    th = geom.angles[:, None]
    u = geom.detector_offsets()[None, :]
    s, d = geom.source_distance, geom.detector_distance
    src = np.stack(np.broadcast_arrays(s * np.sin(th) + 0 * u, -s * np.cos(th) + 0 * u), -1)
    det = np.stack(np.broadcast_arrays(-d * np.sin(th) + u * np.cos(th), d * np.cos(th) + u * np.sin(th)), -1)
    ray = det - src
    return analytic_projections(geom.image_shape[0], src, ray / np.linalg.norm(ray, axis=-1, keepdims=True))


def circle_mask(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2.0
    return (xx - c) ** 2 + (yy - c) ** 2 <= (n / 2.0) ** 2


def psnr_in_circle(recon, truth) -> float:
    recon = recon.detach().cpu().numpy() if isinstance(recon, torch.Tensor) else np.asarray(recon)
    mask = circle_mask(truth.shape[-1])
    data_range = truth[mask].max() - truth[mask].min()
    mse = float(((recon - truth)[mask] ** 2).mean())
    return 10.0 * math.log10(data_range ** 2 / mse)


# -----------------------------------------------------------------------------------------------
# acceptance: ours vs ASTRA's CPU FBP vs skimage iradon on a 256² Shepp–Logan, 180 views
# -----------------------------------------------------------------------------------------------
@pytest.mark.astra
def test_parallel_fbp_matches_astra_and_iradon(record_property):
    astra = pytest.importorskip("astra")
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    n, n_views = 256, 180
    phantom = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float64)
    angles = np.arange(n_views) * (math.pi / n_views)
    geom = ParallelGeometry((n, n), angles, n_detectors=363)

    # one sinogram from ASTRA's CPU 'linear' projector (same conventions), reconstructed by both
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, geom.n_detectors, angles)
    proj_id = astra.create_projector("linear", proj_geom, vol_geom)
    sino_id, sino = astra.create_sino(phantom.astype(np.float32), proj_id)
    rec_id = astra.data2d.create("-vol", vol_geom)
    cfg = astra.astra_dict("FBP")
    cfg.update(ProjectorId=proj_id, ProjectionDataId=sino_id, ReconstructionDataId=rec_id)
    cfg["option"] = {"FilterType": "ram-lak"}
    alg_id = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(alg_id)
        rec_astra = astra.data2d.get(rec_id)
    finally:
        astra.algorithm.delete(alg_id)
        astra.data2d.delete([sino_id, rec_id])
        astra.projector.delete(proj_id)

    rec_ours = fbp(torch.as_tensor(sino), geom, "ramp")

    theta_deg = np.arange(n_views) * (180.0 / n_views)
    rec_iradon = iradon(radon(phantom, theta=theta_deg, circle=True), theta=theta_deg, circle=True,
                        filter_name="ramp")

    ours, ref_astra, ref_iradon = (psnr_in_circle(r, phantom) for r in (rec_ours, rec_astra, rec_iradon))
    print(f"\nFBP PSNR in the reconstruction circle (256², 180 views, ramp): ours {ours:.2f} dB, "
          f"ASTRA FBP {ref_astra:.2f} dB, skimage iradon {ref_iradon:.2f} dB")
    record_property("psnr_ours", ours)
    record_property("psnr_astra", ref_astra)
    record_property("psnr_iradon", ref_iradon)
    assert ours >= max(ref_astra, ref_iradon) - 0.5
    # intensity scale: the mean inside the circle matches the phantom's to 1 %
    mask = circle_mask(n)
    assert abs(rec_ours.numpy()[mask].mean() / phantom[mask].mean() - 1.0) < 0.01


# -----------------------------------------------------------------------------------------------
# filters
# -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parallel_case():
    n = 128
    geom = ParallelGeometry((n, n), np.arange(180) * (math.pi / 180), n_detectors=183)
    return geom, torch.as_tensor(parallel_sinogram(geom), dtype=torch.float32), analytic_image(n)


def test_filter_response_has_dc_and_pads():
    assert padded_length(183) == 512 and padded_length(10) == 64
    for name in FILTERS:
        h = frequency_response(183, name)
        assert h.shape == (512,)
        assert float(h[0]) > 0  # the spatial-kernel construction keeps the DC term
        assert torch.all(h >= -1e-12)
    ramp = frequency_response(183, "ramp")
    # close to |ω|/2 (cycles/sample) away from DC; apodised filters never exceed the ramp
    assert abs(float(ramp[128]) - 0.25) < 1e-3
    for name in ("shepp-logan", "cosine", "hann"):
        assert torch.all(frequency_response(183, name) <= ramp + 1e-12)
    half = frequency_response(183, "ramp", frequency_cutoff=0.5)
    assert float(half[200]) == 0.0 and float(half[100]) > 0


@pytest.mark.parametrize("name,min_psnr", [("ramp", 28.0), ("shepp-logan", 27.0), ("cosine", 24.0),
                                           ("hann", 22.0)])
def test_each_filter_reconstructs(parallel_case, name, min_psnr):
    geom, sino, truth = parallel_case
    rec = fbp(sino, geom, name)
    assert rec.shape == (128, 128) and rec.dtype == torch.float32
    assert psnr_in_circle(rec, truth) > min_psnr
    mask = circle_mask(128)
    assert abs(rec.numpy()[mask].mean() / truth[mask].mean() - 1.0) < 0.01


def test_frequency_cutoff_suppresses_noise(parallel_case):
    geom, sino, _ = parallel_case
    noise = torch.randn(sino.shape, generator=torch.Generator().manual_seed(0))
    mask = torch.as_tensor(circle_mask(128))
    full = fbp(noise, geom, "ramp")[mask].std()
    for name in FILTERS:
        assert fbp(noise, geom, name, frequency_cutoff=0.5)[mask].std() < 0.6 * full


def test_batch_dtype_and_array_input(parallel_case):
    geom, sino, _ = parallel_case
    stack = torch.stack([sino, 2 * sino]).reshape(2, 1, *sino.shape)
    rec = fbp(stack, geom)
    assert rec.shape == (2, 1, 128, 128)
    single = fbp(sino, geom)
    torch.testing.assert_close(rec[0, 0], single)
    torch.testing.assert_close(rec[1, 0], 2 * single, rtol=1e-5, atol=1e-5)
    rec64 = fbp(sino.double(), geom)
    assert rec64.dtype == torch.float64
    torch.testing.assert_close(rec64.float(), single, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fbp(sino.numpy(), geom), single)


# -----------------------------------------------------------------------------------------------
# fan beam
# -----------------------------------------------------------------------------------------------
def _fan_geometry(angles, n=128):
    return FanGeometry((n, n), angles, source_distance=250.0, detector_distance=150.0, n_detectors=300)


def test_fan_full_scan():
    geom = _fan_geometry(np.arange(360) * (2 * math.pi / 360))
    truth = analytic_image(128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = fbp(torch.as_tensor(fan_sinogram(geom)), geom)
    assert rec.dtype == torch.float64
    assert psnr_in_circle(rec, truth) > 28.0
    mask = circle_mask(128)
    assert abs(rec.numpy()[mask].mean() / truth[mask].mean() - 1.0) < 0.01


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_fan_short_scan_parker(direction):
    n_det, s, d = 300, 250.0, 150.0
    fan = 2 * math.atan(0.5 * n_det / (s + d))
    step = math.pi / 180
    n_views = int(math.ceil((math.pi + fan) / step)) + 1
    geom = _fan_geometry(direction * np.arange(n_views) * step)
    truth = analytic_image(128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = fbp(torch.as_tensor(fan_sinogram(geom)), geom)
    assert psnr_in_circle(rec, truth) > 27.0


def test_fan_insufficient_range_warns_and_keeps_scale():
    geom = _fan_geometry(np.arange(120) * (math.pi / 180))
    truth = analytic_image(128)
    with pytest.warns(UserWarning, match="less than a full scan"):
        rec = fbp(torch.as_tensor(fan_sinogram(geom)), geom)
    mask = circle_mask(128)
    assert abs(rec.numpy()[mask].mean() / truth[mask].mean() - 1.0) < 0.1


# -----------------------------------------------------------------------------------------------
# with the 2D projectors of diffrecon.operators.ct
# -----------------------------------------------------------------------------------------------
def test_fbp_of_projector_output():
    ct = pytest.importorskip("diffrecon.operators.ct")
    n = 64
    truth = analytic_image(n)
    x = torch.as_tensor(truth, dtype=torch.float32)
    par = ct.ParallelBeam2D((n, n), np.arange(60) * (math.pi / 60))
    assert psnr_in_circle(fbp(par(x), par), truth) > 24.0
    fan = ct.FanBeam2D((n, n), np.arange(120) * (2 * math.pi / 120), 150.0, 100.0, 140)
    assert psnr_in_circle(fbp(fan(x), fan), truth) > 24.0


# -----------------------------------------------------------------------------------------------
# errors
# -----------------------------------------------------------------------------------------------
def test_errors():
    geom = ParallelGeometry((16, 16), np.arange(10) * 0.3, 23)
    good = torch.zeros(10, 23)
    with pytest.raises(InputDataError, match=r"expected trailing shape \(10, 23\).*found shape \(10, 22\)"):
        fbp(torch.zeros(10, 22), geom)
    with pytest.raises(InputDataError, match=r"found shape \(23, 10\)"):
        fbp(torch.zeros(23, 10), geom)
    for bad in (float("nan"), float("inf")):
        s = good.clone()
        s[3, 4] = bad
        with pytest.raises(InputDataError, match="NaN or Inf"):
            fbp(s, geom)
    with pytest.raises(InputDataError, match=r"ramp.*shepp-logan.*cosine.*hann.*found 'parzen'"):
        fbp(good, geom, "parzen")
    for cutoff in (0.0, 1.5, float("nan")):
        with pytest.raises(InputDataError, match="frequency_cutoff"):
            fbp(good, geom, frequency_cutoff=cutoff)
    with pytest.raises(InputDataError, match="real-valued"):
        fbp(good.to(torch.complex64), geom)
    with pytest.raises(GeometryError, match="found str"):
        fbp(good, "parallel")
    with pytest.raises(GeometryError, match="cone-beam"):
        fdk(good, geom)
    cone = ConeGeometry((4, 8, 8), np.arange(6) * 1.0, 40.0, 20.0, (5, 12))
    with pytest.raises(InputDataError, match=r"expected trailing shape \(6, 5, 12\)"):
        fbp(torch.zeros(6, 12, 5), cone)


@pytest.mark.cuda
def test_fbp_cuda_matches_cpu(parallel_case):
    geom, sino, _ = parallel_case
    torch.testing.assert_close(fbp(sino.cuda(), geom).cpu(), fbp(sino, geom), rtol=1e-4, atol=1e-4)
