"""Library calls refuse nonsense with an InputDataError that says what was wrong (issue 19 audit, row 9)."""

import math

import numpy as np
import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.metrics import plane_metrics, psnr, ssim
from diffrecon.operators import ParallelBeam2D, sparse_angles
from diffrecon.operators.linalg import conjugate_gradient
from diffrecon.recon.analytic import fbp
from diffrecon.recon.classical import admm_tv


def test_metrics_refuse_a_zero_data_range():
    ref = np.full((16, 16), 0.5)
    x = ref + 0.1
    for metric in (psnr, ssim):
        with pytest.raises(InputDataError, match="reference is constant"):
            metric(x, ref)
        with pytest.raises(InputDataError, match="data_range=0"):
            metric(x, ref, data_range=0)
        with pytest.raises(InputDataError, match="data_range=nan"):
            metric(x, ref, data_range=math.nan)
    with pytest.raises(InputDataError, match="plane_metrics"):
        plane_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    # a constant reference with an explicit range is fine
    assert psnr(x, ref, data_range=1.0) == pytest.approx(20.0)


def test_fbp_refuses_an_empty_sinogram_stack():
    A = ParallelBeam2D((16, 16), sparse_angles(8))
    with pytest.raises(InputDataError, match="no data"):
        fbp(torch.zeros(0, *A.out_shape), A)


def test_iteration_counts_must_be_positive():
    A = ParallelBeam2D((8, 8), sparse_angles(4))
    y = A(torch.rand(8, 8))
    with pytest.raises(InputDataError, match="n_iter >= 1"):
        admm_tv(y, A, 0.1, n_iter=0)
    with pytest.raises(InputDataError, match="cg_iter >= 1"):
        admm_tv(y, A, 0.1, cg_iter=0)
    with pytest.raises(InputDataError, match="n_iter >= 1"):
        conjugate_gradient(lambda v: v, torch.ones(3), n_iter=-1)


def test_denoise_refuses_sigma_that_is_not_positive_and_finite():
    from diffrecon.priors import load

    prior = load("head-64")
    y = torch.rand(1, 1, 64, 64)
    for bad in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(InputDataError, match="sigma"):
            prior.denoise(y, bad)
    with pytest.raises(InputDataError, match="one number"):
        prior.denoise(y, torch.tensor([0.1, 0.2]))
    assert prior.denoise(y, torch.tensor(0.1)).shape == y.shape
