"""DDS, the 2D-only baseline and per-slice DPS on an analytic Gaussian prior (exact Tweedie)."""

from __future__ import annotations

import pytest
import torch
from test_sampler_priors import ct_problem, gaussian_prior, gaussian_volume

from diffrecon.recon.classical import cg
from diffrecon.recon.diffusion import DDS, DPS
from diffrecon.recon.problems import PROBLEMS, build_problem


def _posterior_mean(prior, y, A):
    """Exact per-slice posterior mean under the Gaussian slice prior (data units), noiseless y."""
    net = prior.network
    n = net.n
    C = net.cov / prior.data_scale**2
    m = torch.full((n * n,), prior.denormalise(torch.tensor(net.mean)).item(), dtype=torch.float64)
    H = torch.stack([A.op2d(e.view(n, n)).flatten() for e in torch.eye(n * n, dtype=torch.float64)], 1)
    S = H @ C @ H.T + 1e-8 * torch.eye(H.shape[0], dtype=torch.float64)
    out = [m + C @ H.T @ torch.linalg.solve(S, yk.flatten().double() - H @ m) for yk in y]
    return torch.stack(out).view(-1, n, n).float()


@pytest.fixture(scope="module")
def gauss():
    prior = gaussian_prior(8)
    vol = gaussian_volume(prior, 6, seed=1)
    y, A = ct_problem(vol, 3)
    L = A.op2d.norm() ** 2
    return prior, vol, y, A, L, _posterior_mean(prior, y, A)


def mse(a, b):
    return float(((a - b) ** 2).mean())


def test_dds_2d_deterministic_is_nearer_the_posterior_mean(gauss):
    prior, vol, y, A, _, pm = gauss
    ls = cg(y, A, n_iter=100)
    x, rec = DDS(prior, steps=25, eta=0.0, mode="2d", cg_iter=10, progress=False)(y, A)
    assert rec.nfe == 25
    # DDIM(η=0) with exact Tweedie and Krylov DC ends nearer the exact posterior mean than least squares ...
    assert mse(x, pm) < mse(ls, pm)
    # ... and beats the prior-free least-squares solution against the truth
    assert mse(x, vol) < mse(ls, vol)


def test_dds_3d_beats_prior_free_solutions(gauss):
    prior, vol, y, A, L, _ = gauss
    ls = cg(y, A, n_iter=100)
    rho = 0.05 * L
    x, _ = DDS(prior, steps=25, eta=0.0, lam=0.004 * rho, rho=rho, progress=False)(y, A)
    assert mse(x, vol) < mse(ls, vol)
    # the stochastic sampler (η = 0.85) draws an approximate posterior sample: error ≈ 2× the posterior mean's
    xs, _ = DDS(prior, steps=25, lam=0.004 * rho, rho=rho, progress=False)(y, A)
    assert mse(xs, vol) < 0.15 * mse(torch.full_like(vol, 0.5), vol)


def test_slice_only_is_dds_without_tv(gauss):
    prior, vol, y, A, _, _ = gauss
    solver = DDS.slice_only(prior, steps=10, progress=False)
    assert solver.method == "dds_2d" and solver.mode == "2d"
    x, rec = solver(y, A)
    assert rec.method == "dds_2d" and x.shape == vol.shape


def test_dds_noisy_measurements(gauss):
    prior, vol, y, A, _, _ = gauss
    g = torch.Generator().manual_seed(0)
    yn = y + 0.05 * float(y.abs().max()) * torch.randn(y.shape, generator=g)
    x, rec = DDS(prior, steps=20, eta=0.0, mode="2d", sigma_y=0.05, gamma=1.0, progress=False)(yn, A)
    assert rec.settings["sigma_y"] == 0.05
    ls = cg(yn, A, n_iter=100)
    assert mse(x, vol) < mse(ls, vol)


def test_dds_ddim_mixing_and_ve_prior(gauss):
    _, vol, y, A, L, _ = gauss
    prior = gaussian_prior(8, "ve")
    rho = 0.05 * L
    x, _ = DDS(prior, steps=30, eta=0.5, lam=0.004 * rho, rho=rho, noise_mixing="ddim", progress=False)(y, A)
    assert torch.isfinite(x).all() and mse(x, vol) < 0.02


def test_dps_per_slice_reduces_error_vs_prior_mean(gauss):
    prior, vol, y, A, _, _ = gauss
    prior_mean = torch.full_like(vol, 0.5)
    x, rec = DPS(prior, steps=25, zeta=0.5, eta=0.0, progress=False)(y, A)
    assert rec.nfe == 25 and rec.method == "dps"
    assert mse(x, vol) < 0.5 * mse(prior_mean, vol)


def test_paper_presets():
    prior = gaussian_prior(8)
    s = DDS.paper_ct(prior, n_views=8)
    assert (s.steps, s.eta, s.cg_iter, s.tv_axes, s.boundary) == (50, 0.85, 5, (-3,), "periodic")
    assert s.lam == pytest.approx(0.04 * 16 / torch.pi) and s.rho == pytest.approx(10 * 16 / torch.pi)
    r = DDS.paper_ct(prior, n_views=8, backprojector="reference")
    assert (r.lam, r.rho, r.backprojector) == (0.04, 10.0, "reference")
    la = DDS.paper_ct(prior, n_views=90, limited_angle=True)
    assert la.lam == pytest.approx(0.4 * 180 / torch.pi)
    m = DDS.paper_mri(prior)
    assert (m.lam, m.rho, m.eta, m.mode) == (5e-5, 0.01, 0.5, "3d")  # λ/ρ = 0.005, see the docstring
    assert DDS.paper_mri(prior, mode="2d").sigma_y == 0.01


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_problems_build_and_dds_runs(name):
    prior = gaussian_prior(8)
    vol = gaussian_volume(prior, 3).clamp(0, 1)
    p = build_problem(name, vol)
    assert p.truth is vol and p.y.shape[0] == 3
    x, rec = DDS(prior, steps=2, lam=0.01, rho=0.5, progress=False)(p.y, p.operator)
    assert x.shape == vol.shape and torch.isfinite(x).all()


def test_clip_x0_clamps_the_tweedie_estimate_to_the_data_range(gauss, monkeypatch):
    prior, vol, y, A, L, _ = gauss

    def run(clip):
        seen = []
        solver = DDS(prior, steps=5, mode="2d", clip_x0=clip, progress=False)
        original = solver.data_consistency

        def spy(x0, state, ctx):  # the (clamped) Tweedie estimate handed to the data consistency
            seen.append((float(x0.min()), float(x0.max())))
            return original(x0, state, ctx)

        monkeypatch.setattr(solver, "data_consistency", spy)
        _, rec = solver(y, A)
        assert rec.settings["clip_x0"] is clip and len(seen) == 5
        return seen

    assert any(lo < 0 or hi > 1 for lo, hi in run(False))  # the estimate does leave [0, 1] here ...
    assert all(lo >= -1e-6 and hi <= 1 + 1e-6 for lo, hi in run(True))  # ... and the option clamps it
