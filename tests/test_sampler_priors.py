"""Tiny priors for the solver tests: an analytic Gaussian prior (exact Tweedie) and a random MONAI UNet.

The Gaussian prior models every slice as z0 ~ N(m, C) in model space, with an in-plane squared-exponential
covariance C = U diag(λ) Uᵀ. For x_t = a z0 + s ε its exact posterior mean is

    E[z0 | x_t] = m + U diag(a λ / (a² λ + s²)) Uᵀ (x_t − a m),

so the "network" below is the exact MMSE denoiser (parameterisation "x0"). Volumes drawn from it, with
slices that are also correlated along z, are the ground truth of the correctness tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffrecon.priors.prior import DiffusionPrior
from diffrecon.priors.schedule import VESchedule, VPSchedule


def se_covariance(n: int, length: float = 2.0, var: float = 0.25, jitter: float = 1e-4) -> torch.Tensor:
    """Squared-exponential covariance of an n×n image (flattened), float64."""
    ii, jj = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    p = torch.stack([ii.flatten(), jj.flatten()], 1)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    return var * torch.exp(-d2 / (2 * length**2)) + jitter * torch.eye(n * n, dtype=torch.float64)


class GaussianDenoiser(nn.Module):
    """Exact E[z0 | x_t] for z0 ~ N(m, C) per slice; ``coef(c)`` maps the time input to (a, s)."""

    def __init__(self, n: int, coef, mean: float = 0.0, length: float = 2.0, var: float = 0.25):
        super().__init__()
        cov = se_covariance(n, length, var)
        lam, U = torch.linalg.eigh(cov)
        self.register_buffer("U", U)
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("cov", cov)
        self.mean, self.n, self.coef = float(mean), n, coef

    def forward(self, x, c):
        a, s = self.coef(c)
        a = a.to(torch.float64).view(-1, 1)
        s = s.to(torch.float64).view(-1, 1)
        v = x.to(torch.float64).flatten(1) - a * self.mean
        gain = a * self.lam / (a * a * self.lam + s * s)  # (B, n²)
        z0 = self.mean + ((v @ self.U) * gain) @ self.U.T
        return z0.view_as(x).to(x.dtype)


def gaussian_prior(n: int = 8, kind: str = "vp", mean: float = 0.0) -> DiffusionPrior:
    """A DiffusionPrior whose network is the exact Gaussian denoiser (data units: model = 2x − 1)."""
    if kind == "vp":
        sched = VPSchedule.linear(1000, 1e-4, 0.02)

        def coef(c):
            a, s = sched.alpha_sigma(c.detach().cpu().round().long())
            return a, s

        net = GaussianDenoiser(n, coef, mean)
        return DiffusionPrior(net, sched, parameterisation="x0", time_input="index", image_shape=(1, n, n))
    sched = VESchedule(0.01, 50.0, num_steps=1000)

    def coef_ve(c):
        s = c.detach().cpu().to(torch.float64)
        return torch.ones_like(s), s

    net = GaussianDenoiser(n, coef_ve, mean)
    return DiffusionPrior(net, sched, parameterisation="x0", time_input="sigma", image_shape=(1, n, n))


def gaussian_volume(prior: DiffusionPrior, n_slices: int, seed: int = 0, z_corr: float = 0.9) -> torch.Tensor:
    """A volume (S, n, n) in data units whose slices follow the prior and are AR(1)-correlated along z."""
    net = prior.network
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(net.cov)
    w = torch.randn(n_slices, net.n * net.n, generator=g, dtype=torch.float64)
    for k in range(1, n_slices):
        w[k] = z_corr * w[k - 1] + math.sqrt(1 - z_corr**2) * w[k]
    z = net.mean + w @ L.T
    return prior.denormalise(z.view(n_slices, net.n, net.n)).to(torch.float32)


def unet_prior(n: int = 16, seed: int = 0) -> DiffusionPrior:
    """A tiny MONAI DiffusionModelUNet with random weights (for mechanics only)."""
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(seed)
    net = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    )
    with torch.no_grad():  # MONAI zero-initialises some output convolutions; give them small random weights
        for p in net.parameters():
            if not bool(p.any()):
                p.normal_(0.0, 0.05)
    return DiffusionPrior(
        net,
        VPSchedule.linear(1000, 1e-4, 0.02),
        parameterisation="eps",
        time_input="index",
        image_shape=(1, n, n),
    )


def ct_problem(volume: torch.Tensor, n_views: int = 4):
    """Noiseless parallel-beam CT of every slice (axis 0): (y, operator)."""
    from diffrecon.operators import ParallelBeam2D, SliceWise, sparse_angles

    A = SliceWise(ParallelBeam2D(tuple(volume.shape[1:]), sparse_angles(n_views)), axis=0)
    return A(volume).contiguous(), A


# ------------------------------------------------------------------------------------------------
def test_gaussian_denoiser_is_the_posterior_mean():
    torch.manual_seed(0)
    prior = gaussian_prior(4)
    net = prior.network
    t = 300
    a, s = prior.schedule.alpha_sigma(torch.tensor(t))
    # brute force: E[z0|x] = m + C a (a² C + s² I)^-1 (x − a m)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    expect = net.cov @ (
        a * torch.linalg.solve(a * a * net.cov + s * s * torch.eye(16, dtype=torch.float64), x.flatten())
    )
    got = prior.x0(x.float(), torch.tensor([t]))
    assert torch.allclose(got.double().flatten(), expect, atol=1e-4)


def test_unet_prior_runs():
    pytest.importorskip("monai")
    prior = unet_prior(16)
    z0, eps = prior.predict(torch.randn(2, 1, 16, 16), torch.tensor([10, 500]))
    assert z0.shape == eps.shape == (2, 1, 16, 16)
