"""MPSNR / MSSIM / SAM / ERGAS against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.metrics import band_psnr, ergas, hsi_metrics, mpsnr, mpsnr_tensor, mssim, sam


def test_mpsnr_hand_computed():
    ref = np.zeros((4, 5, 2))
    x = ref.copy()
    x[..., 0] = 0.1  # MSE 0.01 → 20 dB
    x[..., 1] = 0.01  # MSE 1e-4 → 40 dB
    np.testing.assert_allclose(band_psnr(x, ref), [20.0, 40.0])
    assert mpsnr(x, ref) == pytest.approx(30.0)
    assert mpsnr(x, ref, data_range=2.0) == pytest.approx(30.0 + 20 * math.log10(2))
    assert mpsnr(ref, ref) == math.inf


def test_sam_hand_computed():
    ref = np.zeros((1, 2, 2))
    ref[0, 0] = [1.0, 0.0]
    ref[0, 1] = [1.0, 1.0]
    x = np.zeros_like(ref)
    x[0, 0] = [1.0, 1.0]  # 45°
    x[0, 1] = [2.0, 2.0]  # 0° (scale does not matter)
    assert sam(x, ref) == pytest.approx(22.5)
    assert sam(x, ref, degrees=False) == pytest.approx(math.pi / 8)
    x[0, 1] = [0.0, 0.0]  # zero estimate counts as 90°
    assert sam(x, ref) == pytest.approx((45 + 90) / 2)


def test_ergas_hand_computed():
    ref = np.ones((3, 3, 2))
    ref[..., 1] = 2.0
    x = ref.copy()
    x[..., 0] += 0.1  # RMSE 0.1, mean 1 → 0.01
    x[..., 1] += 0.4  # RMSE 0.4, mean 2 → 0.04
    expected = 100 * math.sqrt((0.01 + 0.04) / 2)
    assert ergas(x, ref) == pytest.approx(expected)
    assert ergas(x, ref, ratio=0.25) == pytest.approx(expected / 4)
    assert ergas(ref, ref) == 0.0


def test_mssim_perfect_and_mean_of_bands():
    rng = np.random.default_rng(0)
    ref = rng.random((16, 16, 3))
    assert mssim(ref, ref) == pytest.approx(1.0)
    x = ref.copy()
    x[..., 1] = 1.0 - ref[..., 1]
    from diffrecon.metrics import ssim

    per = [ssim(x[..., b], ref[..., b], 1.0) for b in range(3)]
    assert mssim(x, ref) == pytest.approx(np.mean(per))
    assert per[1] < 0


def test_metric_errors():
    with pytest.raises(InputDataError):
        mpsnr(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(InputDataError, match=r"\(H, W, B\)"):
        sam(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InputDataError, match="NaN"):
        mpsnr(np.full((2, 2, 2), np.nan), np.zeros((2, 2, 2)))
    with pytest.raises(InputDataError, match="zero mean"):
        ergas(np.ones((2, 2, 1)), np.zeros((2, 2, 1)))
    out = hsi_metrics(np.full((12, 12, 2), 0.5), np.full((12, 12, 2), 0.4))
    assert set(out) == {"mpsnr", "mssim", "sam", "ergas"}
    assert out["sam"] == pytest.approx(0.0, abs=1e-6)


def test_mpsnr_tensor_matches_mpsnr_on_device_and_batched():
    """mpsnr_tensor: the same PSNR formula as mpsnr, as a torch tensor (no host round trip), with
    leading batch dimensions; a perfect band is inf by default and capped by mse_floor."""
    ref = torch.zeros(4, 5, 2, dtype=torch.float64)
    x = ref.clone()
    x[..., 0] = 0.1  # 20 dB
    x[..., 1] = 0.01  # 40 dB
    v = mpsnr_tensor(x, ref)
    assert isinstance(v, torch.Tensor) and v.shape == () and v.dtype == torch.float64
    assert float(v) == pytest.approx(30.0)
    assert float(mpsnr_tensor(x, ref, data_range=2.0)) == pytest.approx(30.0 + 20 * math.log10(2))
    assert float(mpsnr_tensor(ref, ref)) == math.inf
    assert float(mpsnr_tensor(ref, ref, mse_floor=1e-20)) == pytest.approx(200.0)
    g = torch.Generator().manual_seed(0)
    a, r = torch.rand(3, 9, 8, 5, generator=g, dtype=torch.float64), torch.rand(3, 9, 8, 5, generator=g,
                                                                               dtype=torch.float64)
    batch = mpsnr_tensor(a, r)
    assert batch.shape == (3,)
    for k in range(3):  # float64: equal to the NumPy metric up to the order of the mean's sum
        assert float(batch[k]) == pytest.approx(mpsnr(a[k], r[k]), rel=1e-12)
    a32, r32 = a.float(), r.float()
    assert mpsnr_tensor(a32, r32).dtype == torch.float32
    np.testing.assert_allclose(mpsnr_tensor(a32, r32).numpy(), batch.numpy(), rtol=1e-5)
    with pytest.raises(InputDataError, match="does not match"):
        mpsnr_tensor(a, r[..., :4])
    with pytest.raises(InputDataError, match=r"\(\.\.\., H, W, B\)"):
        mpsnr_tensor(a[0, 0], r[0, 0])
    with pytest.raises(InputDataError, match="torch tensors"):
        mpsnr_tensor(a.numpy(), r.numpy())


def test_band_psnr_and_mpsnr_tensor_share_the_psnr_formula():
    """One PSNR formula (metrics._psnr_db) behind both: per-band values agree given the same MSEs."""
    from diffrecon.metrics import _psnr_db

    rng = np.random.default_rng(1)
    x, ref = rng.random((6, 7, 4)), rng.random((6, 7, 4))
    mse = np.mean((x - ref) ** 2, axis=(0, 1))
    np.testing.assert_array_equal(band_psnr(x, ref), _psnr_db(mse, 1.0))
    t = _psnr_db(torch.from_numpy(mse), 1.0)
    np.testing.assert_allclose(t.numpy(), band_psnr(x, ref), rtol=1e-15)
    assert mpsnr(x, ref) == float(np.mean(_psnr_db(mse, 1.0)))
