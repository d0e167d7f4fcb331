"""Classical baselines: per-band TV (PDHG), FastHyDe-style subspace denoiser, interpolation, bicubic."""

import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.metrics import mpsnr
from diffrecon.operators.hsi import Inpainting, SpatialSR, add_gaussian_noise, random_voxel_mask
from diffrecon.recon import hsi_baselines as hb

pytestmark = pytest.mark.usefixtures("one_thread")


def _cube(h=32, w=24, b=8):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    maps = torch.stack(
        [(yy > 0.4).float(), (xx > 0.6).float() * 0.7 + 0.3 * yy, 0.5 + 0.5 * torch.sin(4 * xx)]
    )
    spec = torch.stack(
        [torch.linspace(0.2, 0.8, b), torch.linspace(0.7, 0.1, b), 0.4 + 0.2 * torch.cos(torch.arange(b))]
    )
    c = torch.einsum("rhw,rb->hwb", maps, spec)
    return c / c.max()


def test_tv_and_subspace_denoise_improve():
    clean = _cube()
    noisy = add_gaussian_noise(clean, 0.1, seed=0)
    base = mpsnr(noisy.clamp(0, 1), clean)
    tv = hb.tv_restore(noisy, sigma=0.1, n_iter=100)
    sub = hb.subspace_denoise(noisy, sigma=0.1)
    assert mpsnr(tv, clean) > base + 5
    assert mpsnr(sub, clean) > base + 8
    assert hb.subspace_rank(noisy, 0.1) <= 4
    assert mpsnr(hb.subspace_denoise(noisy, rank=3, denoiser="wavelet"), clean) > base + 5


def test_tv_is_per_band():
    """Changing one band of the input leaves the other bands' TV estimates unchanged."""
    clean = _cube(16, 16, 3)
    noisy = add_gaussian_noise(clean, 0.1, seed=1)
    a = hb.tv_restore(noisy, lam=0.08, n_iter=20)
    noisy2 = noisy.clone()
    noisy2[..., 0] = 0.5
    b = hb.tv_restore(noisy2, lam=0.08, n_iter=20)
    torch.testing.assert_close(a[..., 1:], b[..., 1:])


def test_inpaint_and_sr_baselines():
    small = _cube(16, 16, 2)
    op_s = Inpainting(random_voxel_mask(small.shape, 0.3, seed=2))
    interp = hb.interpolate_missing(op_s(small), op_s.mask.bool())
    assert mpsnr(interp, small) > mpsnr(op_s(small), small) + 10
    clean = _cube()
    op = Inpainting(random_voxel_mask(clean.shape, 0.2, seed=2))
    y = op(clean)
    tv = hb.tv_restore(y, op, lam=0.01, n_iter=100)
    assert mpsnr(tv, clean) > mpsnr(y, clean) + 10
    sr = SpatialSR(tuple(clean.shape), 2)
    low = sr(clean)
    up = hb.upsample_bicubic(low, clean.shape[:2])
    assert up.shape == clean.shape and mpsnr(up, clean) > 25
    assert mpsnr(hb.tv_restore(low, sr, lam=0.002, n_iter=100), clean) > 25
    with pytest.raises(InputDataError, match="sigma or lam"):
        hb.tv_restore(y, op)
    with pytest.raises(InputDataError, match="no observed"):
        m = torch.ones(clean.shape, dtype=torch.bool)
        m[..., 0] = False
        hb.interpolate_missing(y, m)
