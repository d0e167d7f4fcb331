"""MRI operators against sigpy, mask accelerations, coil maps, shape/error handling."""

import math

import numpy as np
import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.operators.coils import birdcage_maps
from diffrecon.operators.mri import (
    MultiCoilMRI,
    MultiCoilMRI3D,
    NonCartesianMRI,
    SingleCoilMRI,
    fftc,
    ifftc,
    radial_trajectory,
)
from diffrecon.operators.sampling import (
    equispaced1d_mask,
    gaussian1d_mask,
    poisson2d_mask,
    radial_mask,
    uniform1d_mask,
)

sp = pytest.importorskip("sigpy")
mr = pytest.importorskip("sigpy.mri")


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", [(32, 48), (31, 45)], ids=["even", "odd"])
def test_multicoil_matches_sigpy_sense(shape):
    h, w = shape
    g = torch.Generator().manual_seed(0)
    maps = birdcage_maps((6, h, w)) * torch.polar(torch.ones(1), torch.tensor(0.3))
    maps = maps + 0.05 * torch.randn(maps.shape, generator=g, dtype=torch.complex64)
    mask = uniform1d_mask(shape, 3, 0.1, seed=1).mask
    ours = MultiCoilMRI(maps, mask)
    ref = mr.linop.Sense(maps.numpy(), weights=mask.numpy().astype(np.float32))
    x = torch.randn(h, w, generator=g, dtype=torch.complex64)
    y = torch.randn(6, h, w, generator=g, dtype=torch.complex64) * mask
    assert _rel(ours(x).numpy(), ref(x.numpy())) < 1e-5
    assert _rel(ours.adjoint(y).numpy(), ref.H(y.numpy())) < 1e-5
    # the fused normal equals adjoint(forward)
    torch.testing.assert_close(ours.normal(x), ours.adjoint(ours(x)), rtol=1e-5, atol=1e-5)


def test_per_slice_maps_and_batch_match_sigpy_per_slice():
    s, c, h, w = 3, 4, 16, 20
    maps = birdcage_maps((c, s, h, w)).permute(1, 0, 2, 3).contiguous()
    mask = gaussian1d_mask((h, w), 2, 0.2, seed=0).mask
    op = MultiCoilMRI(maps, mask)
    x = torch.randn(2, s, h, w, dtype=torch.complex64)
    y = op(x)
    assert y.shape == (2, s, c, h, w)
    for i in range(s):
        ref = mr.linop.Sense(maps[i].numpy(), weights=mask.numpy().astype(np.float32))
        assert _rel(y[1, i].numpy(), ref(x[1, i].numpy())) < 1e-5


def test_fft_is_centred_and_unitary():
    x = torch.zeros(8, 10, dtype=torch.complex64)
    x[4, 5] = 1.0  # image centre
    k = fftc(x)
    torch.testing.assert_close(k.abs(), torch.full((8, 10), 1 / math.sqrt(80)))
    x = torch.randn(7, 9, dtype=torch.complex64)
    torch.testing.assert_close(ifftc(fftc(x)), x, rtol=1e-5, atol=1e-5)
    assert abs(float(fftc(x).norm() / x.norm()) - 1) < 1e-5
    np.testing.assert_allclose(fftc(x).numpy(), sp.fft(x.numpy(), axes=(-2, -1)), rtol=1e-4, atol=1e-5)


def test_single_coil_and_real_input():
    mask = uniform1d_mask((8, 12), 2, 0.25, seed=0).mask
    a = SingleCoilMRI(mask)
    x = torch.randn(8, 12)
    torch.testing.assert_close(a(x), mask * fftc(x.to(torch.complex64)))
    b = SingleCoilMRI(mask, real_input=True)
    y = torch.randn(8, 12, dtype=torch.complex64)
    torch.testing.assert_close(b.adjoint(y), ifftc(mask * y).real)
    with pytest.raises(InputDataError, match="real image"):
        b(torch.randn(8, 12, dtype=torch.complex64))


def test_fully_sampled_is_isometry_and_3d_matches_sigpy():
    maps = birdcage_maps((4, 6, 8, 10), n_rings=2)
    torch.testing.assert_close((maps.abs() ** 2).sum(0), torch.ones(6, 8, 10), rtol=1e-5, atol=1e-5)
    op = MultiCoilMRI3D(maps, torch.ones(6, 8, 10, dtype=torch.bool))
    x = torch.randn(6, 8, 10, dtype=torch.complex64)
    assert abs(float(op(x).norm() / x.norm()) - 1) < 1e-5
    ref = mr.linop.Sense(maps.numpy())
    assert _rel(op(x).numpy(), ref(x.numpy())) < 1e-5


def test_operator_errors():
    maps = birdcage_maps((2, 8, 8))
    with pytest.raises(InputDataError, match="does not match the k-space grid"):
        MultiCoilMRI(maps, torch.ones(8, 9, dtype=torch.bool))
    with pytest.raises(InputDataError, match="empty mask"):
        MultiCoilMRI(maps, torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(InputDataError, match="coil maps of shape"):
        MultiCoilMRI(maps[0], torch.ones(8, 8))
    with pytest.raises(InputDataError, match="trailing shape"):
        MultiCoilMRI(maps, torch.ones(8, 8))(torch.randn(8, 7, dtype=torch.complex64))
    with pytest.raises(InputDataError, match="per-slice mask has 2 slices"):
        MultiCoilMRI(maps.expand(3, 2, 8, 8), torch.ones(2, 8, 8))


@pytest.mark.parametrize("accel", [2, 3, 4, 5.5, 8, 10])
@pytest.mark.parametrize("shape", [(64, 64), (57, 95), (320, 368)])
def test_line_masks_realise_requested_acceleration(shape, accel):
    w = shape[-1]
    for fn in (uniform1d_mask, gaussian1d_mask, equispaced1d_mask):
        mask, realised = fn(shape, accel, center_fraction=0.04, seed=3)
        lines = int(mask[0].sum())
        assert mask.shape == shape and mask.dtype == torch.bool
        assert (mask == mask[:1]).all()  # whole columns
        assert abs(lines - w / accel) <= 0.5 + 1e-9  # within rounding to one line
        assert realised == pytest.approx(w / lines)
        assert mask[0, w // 2 - 1 : w // 2 + 1].all()  # centre band sampled


@pytest.mark.parametrize("accel", [3, 4, 8])
def test_2d_masks_realise_requested_acceleration(accel):
    for mask, realised in (
        poisson2d_mask((64, 80), accel, calib=12, seed=1),
        radial_mask((64, 80), accel, seed=1),
    ):
        n = int(mask.sum())
        assert abs(n - 64 * 80 / accel) <= 0.5 + 1e-9
        assert realised == pytest.approx(64 * 80 / n)
        assert mask[32, 40]  # DC sampled


def test_masks_are_seeded():
    for fn, kw in (
        (uniform1d_mask, {}),
        (gaussian1d_mask, {}),
        (equispaced1d_mask, {}),
        (poisson2d_mask, {"calib": 8}),
        (radial_mask, {}),
    ):
        a = fn((48, 48), 4, seed=5, **kw).mask
        b = fn((48, 48), 4, seed=5, **kw).mask
        c = fn((48, 48), 4, seed=6, **kw).mask
        assert torch.equal(a, b) and not torch.equal(a, c), fn.__name__


def test_mask_errors():
    with pytest.raises(InputDataError, match="exceeds the budget"):
        uniform1d_mask((64, 64), 8, center_fraction=0.3)
    with pytest.raises(InputDataError, match="acceleration >= 1"):
        uniform1d_mask((64, 64), 0.5)
    with pytest.raises(InputDataError, match="2-D k-space shape"):
        radial_mask((64,), 2)


def test_noncartesian_on_grid_approximates_fft():
    h, w = 16, 16
    coord = torch.stack(
        torch.meshgrid(torch.arange(h) - h // 2.0, torch.arange(w) - w // 2.0, indexing="ij"), -1
    )
    op = NonCartesianMRI(coord, image_shape=(h, w))
    x = torch.randn(h, w, dtype=torch.complex64)
    assert _rel(op(x).numpy(), fftc(x).numpy()) < 2e-2
    traj = radial_trajectory(7, 16)
    assert traj.shape == (7, 16, 2) and float(traj.abs().max()) <= 8
    op = NonCartesianMRI(traj, birdcage_maps((3, 16, 16)))
    assert op(x).shape == (3, 7, 16)
    with pytest.raises(InputDataError, match="coordinates must lie"):
        NonCartesianMRI(traj * 3, image_shape=(16, 16))


def test_espirit_torch_matches_sigpy_and_recovers_maps():
    from diffrecon.operators.coils import espirit_maps

    h, w = 40, 44
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    obj = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1).float() * (1 + 0.3 * torch.cos(3 * xx))
    maps = birdcage_maps((6, h, w))
    k = MultiCoilMRI(maps, torch.ones(h, w, dtype=torch.bool))(obj.to(torch.complex64))
    ours = espirit_maps(k, calib_width=16, kernel_width=5)
    ref = torch.from_numpy(np.asarray(espirit_maps(k, calib_width=16, kernel_width=5, backend="sigpy")))
    support = (ours.abs().sum(0) > 0) & (ref.abs().sum(0) > 0)
    assert float(support.float().mean()) > 0.4
    diff = (ours - ref).abs().pow(2).sum(0).sqrt()[support]
    assert float(diff.max()) < 1e-3
    # inside the object the estimate equals the true maps up to one phase per voxel
    inside = support & (obj > 0)
    corr = (ours.conj() * maps).sum(0).abs()[inside]
    assert float(corr.min()) > 0.99
