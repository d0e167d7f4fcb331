"""MPSNR / MSSIM / SAM / ERGAS against hand-computed values."""

import math

import numpy as np
import pytest

from diffrecon.errors import InputDataError
from diffrecon.metrics import band_psnr, ergas, hsi_metrics, mpsnr, mssim, sam


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
