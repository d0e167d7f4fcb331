"""HSI degradations: SVDs reconstruct their operators, noise generators, σ estimation, bad input."""

import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.operators.hsi import (
    Denoising,
    Inpainting,
    MissingBands,
    SpatialSR,
    SpectralCS,
    bicubic_downsampling_matrix,
    check_cube,
    random_voxel_mask,
)
from diffrecon.operators.noise import add_gaussian_noise, add_mixed_noise, estimate_sigma

SHAPE = (9, 7, 5)  # non-square, odd sizes


def _ops():
    return {
        "denoise": Denoising(SHAPE),
        "inpaint": Inpainting(random_voxel_mask(SHAPE, 0.2, seed=3)),
        "bands": MissingBands(SHAPE, [0, 3]),
        "sr2": SpatialSR(SHAPE, 2),
        "sr4": SpatialSR((16, 12, 3), 4),
        "cs": SpectralCS(SHAPE, 2, seed=1),
    }


@pytest.mark.parametrize("name", list(_ops()))
def test_svd_reconstructs_operator(name):
    op = _ops()[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *op.in_shape, generator=g, dtype=torch.float64)
    y = torch.randn(2, *op.out_shape, generator=g, dtype=torch.float64)
    s = op.singular_values().double()
    assert s.shape == op.in_shape
    torch.testing.assert_close(op.U(s * op.Vt(x)), op(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.V(s * op.Ut(y)), op.adjoint(y), rtol=1e-10, atol=1e-12)
    # V orthogonal, U an isometry on the range
    torch.testing.assert_close(op.V(op.Vt(x)), x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.Vt(op.V(x)), x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.U(op.Ut(op(x))), op(x), rtol=1e-10, atol=1e-12)
    assert abs(float(op.Vt(x).norm()) - float(x.norm())) < 1e-9 * float(x.norm())
    # singular values are non-negative; zero ones span the null space
    assert bool((s >= 0).all())
    z = torch.where(s == 0, torch.randn_like(x), torch.zeros_like(x))
    assert float(op(op.V(z)).abs().max()) < 1e-10


def test_sr_matrix_properties():
    k = bicubic_downsampling_matrix(12, 2)
    assert k.shape == (6, 12)
    torch.testing.assert_close(k.sum(1), torch.ones(6, dtype=torch.float64))
    op = SpatialSR((10, 14, 2), 2)
    const = torch.full((10, 14, 2), 0.3)
    torch.testing.assert_close(op(const), torch.full((5, 7, 2), 0.3))
    assert op.out_shape == (5, 7, 2)
    # ×4 on a non-divisible side floors the output size
    assert SpatialSR((18, 13, 1), 4).out_shape == (4, 3, 1)


def test_mask_fraction_and_seed():
    m = random_voxel_mask((20, 10, 4), 0.2, seed=5)
    assert m.dtype == torch.bool and int(m.sum()) == 160
    assert torch.equal(m, random_voxel_mask((20, 10, 4), 0.2, seed=5))
    assert not torch.equal(m, random_voxel_mask((20, 10, 4), 0.2, seed=6))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputDataError, match="observes no voxel"):
        Inpainting(torch.zeros(4, 4, 3, dtype=torch.bool))
    with pytest.raises(InputDataError, match=r"\(H, W, B\)"):
        Inpainting(torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(InputDataError, match="all 3 bands are missing"):
        MissingBands((4, 4, 3), [0, 1, 2])
    with pytest.raises(InputDataError, match="smaller than the factor"):
        SpatialSR((3, 8, 2), 4)
    with pytest.raises(InputDataError, match="NaN"):
        check_cube(torch.tensor([[[float("nan")]]]))
    with pytest.raises(InputDataError, match=r"\(H, W, B\)"):
        check_cube(torch.zeros(4, 4))
    with pytest.raises(InputDataError, match="> 0"):
        add_gaussian_noise(torch.zeros(4, 4, 2), 0.0)
    with pytest.raises(InputDataError, match="> 0"):
        add_gaussian_noise(torch.zeros(4, 4, 2), -0.1)
    with pytest.raises(InputDataError, match="observed fraction"):
        random_voxel_mask((4, 4, 2), 0.0)


def test_gaussian_noise_and_estimate():
    clean = torch.full((64, 48, 6), 0.5)
    noisy = add_gaussian_noise(clean, 0.1, seed=2)
    assert abs(float((noisy - clean).std()) - 0.1) < 0.005
    assert abs(float(estimate_sigma(noisy)) - 0.1) < 0.01
    per = estimate_sigma(add_gaussian_noise(clean, torch.linspace(0.02, 0.2, 6), seed=3), per_band=True)
    torch.testing.assert_close(per, torch.linspace(0.02, 0.2, 6), rtol=0.15, atol=0.0)
    assert torch.equal(add_gaussian_noise(clean, 0.1, seed=2), noisy)


def test_mixed_noise_recipe():
    clean = torch.full((32, 40, 9), 0.5)
    noisy, info = add_mixed_noise(clean, seed=1)
    assert noisy.shape == clean.shape
    assert len(info["sigma_per_band"]) == 9 and all(0.01 <= s <= 0.1 for s in info["sigma_per_band"])
    for kind in ("stripes", "deadlines", "impulse"):
        assert len(info[kind]) == 3
    dead, info_d = add_mixed_noise(clean, seed=1, kinds=("deadlines",))
    band = info_d["deadlines"][0]
    assert int((dead[..., band] == 0).all(0).sum()) >= 2  # whole dead columns (5-15 % of 40)
    noisy2, _ = add_mixed_noise(clean, seed=1)
    assert torch.equal(noisy, noisy2)
