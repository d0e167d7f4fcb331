"""DiffusionMBIR: presets, the VE/VP predictor–corrector with shared ADMM-TV, the closing DC step."""

from __future__ import annotations

import math

import pytest
import torch
from test_sampler_priors import ct_problem, gaussian_prior, gaussian_volume

from diffrecon.recon.classical import cg
from diffrecon.recon.diffusion import DiffusionMBIR


def mse(a, b):
    return float(((a - b) ** 2).mean())


@pytest.fixture(scope="module")
def setup():
    vol = gaussian_volume(gaussian_prior(8), 6, seed=1)
    y, A = ct_problem(vol, 3)
    return vol, y, A, A.op2d.norm() ** 2


def test_presets_map_to_the_paper():
    prior = gaussian_prior(8, "ve")
    s = DiffusionMBIR.paper_ct(prior, n_views=8)
    assert (s.steps, s.snr, s.n_corrector, s.cg_iter, s.final_consistency) == (2000, 0.16, 1, 1, True)
    assert s.lam == pytest.approx(0.04 * 16 / math.pi) and s.rho == pytest.approx(10 * 16 / math.pi)
    assert s.lam / s.rho == pytest.approx(0.004)  # the shrinkage threshold is unchanged
    r = DiffusionMBIR.paper_ct(prior, n_views=4, backprojector="reference")
    assert (r.lam, r.rho) == (0.04, 10.0)
    m = DiffusionMBIR.paper_mri(prior)
    assert (m.lam, m.rho, m.final_consistency) == (0.005, 0.01, False)


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_mbir_recovers_the_volume_with_balanced_rho(setup, kind):
    vol, y, A, L = setup
    prior = gaussian_prior(8, kind)
    rho = 0.05 * L  # the reference's balance: rho·‖DᵀD‖ well below ‖AᵀA‖
    x, rec = DiffusionMBIR(
        prior, steps=100, lam=0.004 * rho, rho=rho, final_consistency=True, progress=False
    )(y, A)
    assert rec.nfe == 2 * 100 - 1
    ls = cg(y, A, n_iter=100)
    # a posterior *sample* at 100 steps: well below the prior's error, within a small factor of least squares
    assert mse(x, vol) < 0.3 * mse(torch.full_like(vol, 0.5), vol)
    assert mse(x, vol) < 3.0 * mse(ls, vol)


def test_final_consistency_reduces_the_residual(setup):
    vol, y, A, L = setup
    prior = gaussian_prior(8, "ve")
    kw = dict(steps=20, lam=0.004 * L, rho=L, progress=False, seed=2)
    a, _ = DiffusionMBIR(prior, final_consistency=False, **kw)(y, A)
    b, _ = DiffusionMBIR(prior, final_consistency=True, **kw)(y, A)
    assert (A(b) - y).norm() < (A(a) - y).norm()


def test_corrector_options_and_all_axes(setup):
    vol, y, A, L = setup
    prior = gaussian_prior(8, "ve")
    for kw in ({"corrector_time": "same"}, {"n_corrector": 0}, {"tv_axes": "all", "boundary": "neumann"}):
        x, rec = DiffusionMBIR(prior, steps=5, lam=0.01, rho=1.0, progress=False, **kw)(y, A)
        assert torch.isfinite(x).all()
    assert rec.settings["tv_axes"] == [-3, -2, -1]


def test_vp_posterior_variance_option(setup):
    vol, y, A, L = setup
    prior = gaussian_prior(8, "vp")
    rho = 0.05 * L
    x, rec = DiffusionMBIR(
        prior, steps=50, lam=0.004 * rho, rho=rho, vp_variance="posterior", progress=False
    )(y, A)
    assert rec.settings["vp_variance"] == "posterior"
    assert mse(x, vol) < 0.3 * mse(torch.full_like(vol, 0.5), vol)
    with pytest.raises(Exception, match="vp_variance"):
        DiffusionMBIR(prior, vp_variance="small")
