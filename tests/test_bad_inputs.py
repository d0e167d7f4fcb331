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


def test_resume_refuses_states_of_other_data_operators_priors_and_tampered_steps(tmp_path):
    """Issue 19 audit row 5: the fingerprint held only Σ|y|, shapes and settings, so slice-permuted
    data, rotated angles or another prior resumed "successfully" to a different result."""
    from test_sampler_priors import unet_prior

    from diffrecon.operators import SliceWise
    from diffrecon.recon.diffusion import DDS

    angles = sparse_angles(3)
    A = SliceWise(ParallelBeam2D((8, 8), angles), axis=0)
    y = A(torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0)))
    prior = unet_prior(8, seed=0)
    state = tmp_path / "s.pt"
    DDS(prior, steps=4, progress=False)(y, A, save_state=state, stop_after=2)
    DDS(prior, steps=4, progress=False)(y, A, resume=state)  # the same run resumes

    def refused(match, y=y, A=A, prior=prior, path=state):
        with pytest.raises(InputDataError, match=match):
            DDS(prior, steps=4, progress=False)(y, A, resume=path)

    refused("different measurements", y=y.flip(0))  # same Σ|y|, slices permuted
    refused("another operator", A=SliceWise(ParallelBeam2D((8, 8), angles + 0.1), axis=0))
    other = unet_prior(8, seed=1)  # same architecture, other weights
    refused("prior_sha256", prior=other)
    blob = torch.load(state, map_location="cpu", weights_only=True)
    for bad in (10**6, -3):
        blob["step"] = bad
        tampered = tmp_path / f"t{bad}.pt"
        torch.save(blob, tampered)
        refused("not resumable", path=tampered)
