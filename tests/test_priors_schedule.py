"""Closed-form checks of every schedule × parameterisation × time-input conversion on Gaussian data.

For z0 ~ N(μ, τ²) elementwise and x_t = a z0 + s ε:  p_t = N(aμ, a²τ² + s²), so
    score(x) = -(x - aμ)/(a²τ² + s²),   E[z0|x] = μ + aτ²(x - aμ)/(a²τ² + s²),
    E[ε|x]  = s(x - aμ)/(a²τ² + s²).
An "oracle network" outputs the exact conditional expectation of its parameterisation's target;
the prior's x0/eps/score must then equal the closed forms.
"""

import math

import pytest
import torch
from torch import nn

from diffrecon.priors import (
    DiffusionPrior,
    VESchedule,
    VPContinuousSchedule,
    VPSchedule,
    schedule_from_config,
)
from diffrecon.priors.prior import convert

MU, TAU = 0.3, 0.7


class Oracle(nn.Module):
    def __init__(self, schedule, param, time_input):
        super().__init__()
        self.schedule, self.param, self.time_input = schedule, param, time_input
        self.dummy = nn.Parameter(torch.zeros(()))

    def coef(self, c):
        c = c.double()
        if self.time_input == "index":
            return self.schedule.alpha_sigma(c.round().long())
        if self.time_input == "t1000":
            return self.schedule.alpha_sigma(c / 1000)
        r = c if self.time_input == "sigma" else c.exp()
        if self.schedule.kind == "ve":
            return torch.ones_like(r), r
        a = 1 / torch.sqrt(1 + r**2)
        return a, r * a

    def forward(self, x, c):
        a, s = (v.view(-1, 1, 1, 1).to(x.dtype) for v in self.coef(c))
        var = a**2 * TAU**2 + s**2
        d = x - a * MU
        e_z0, e_eps = MU + a * TAU**2 * d / var, s * d / var
        return {"eps": e_eps, "x0": e_z0, "v": a * e_eps - s * e_z0, "score": -d / var}[self.param]


SCHEDULES = {
    "vp-linear": (lambda: VPSchedule.linear(1000, 1e-4, 0.02), ["index", "sigma", "log_sigma"]),
    "vp-cosine": (lambda: VPSchedule.cosine(1000), ["index", "log_sigma"]),
    "vp-continuous": (lambda: VPContinuousSchedule(0.1, 20.0), ["t1000", "log_sigma"]),
    "ve-continuous": (lambda: VESchedule(0.01, 50.0), ["t1000", "sigma", "log_sigma"]),
    "ve-discrete": (lambda: VESchedule(0.01, 50.0, num_steps=100, discrete=True), ["index", "log_sigma"]),
}
CASES = [(k, ti, p) for k, (_, tis) in SCHEDULES.items() for ti in tis for p in ("eps", "x0", "v", "score")]


def _times(sched):
    if sched.discrete:
        return torch.tensor([0, sched.num_steps // 3, sched.num_steps - 1])
    return torch.tensor([0.02, 0.4, 0.95])


@pytest.mark.parametrize("sched_name,time_input,param", CASES)
def test_gaussian_closed_form(sched_name, time_input, param):
    sched = SCHEDULES[sched_name][0]()
    prior = DiffusionPrior(
        Oracle(sched, param, time_input), sched, param, time_input, data_scale=1.0, data_shift=0.0
    ).double()
    g = torch.Generator().manual_seed(0)
    t = _times(sched)
    z0 = MU + TAU * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    xt = prior.add_noise(z0, eps, t)
    a, s = (v.view(-1, 1, 1, 1) for v in sched.alpha_sigma(t))
    assert torch.allclose(xt, a * z0 + s * eps)
    var = a**2 * TAU**2 + s**2
    d = xt - a * MU
    tol = dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prior.x0(xt, t), MU + a * TAU**2 * d / var, **tol)
    torch.testing.assert_close(prior.eps(xt, t), s * d / var, **tol)
    torch.testing.assert_close(prior.score(xt, t), -d / var, rtol=1e-6, atol=1e-6 / float(s.min()))


@pytest.mark.parametrize("param", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("sched_name", list(SCHEDULES))
def test_target_roundtrip(sched_name, param):
    """convert(target(z0, ε, t), x_t) recovers (z0, ε) exactly for every parameterisation."""
    sched = SCHEDULES[sched_name][0]()
    prior = DiffusionPrior(nn.Identity(), sched, param, SCHEDULES[sched_name][1][0])
    t = _times(sched)
    z0, eps = torch.randn(3, 1, 5, 5, dtype=torch.float64), torch.randn(3, 1, 5, 5, dtype=torch.float64)
    xt = prior.add_noise(z0, eps, t)
    a, s = prior.alpha_sigma(t, xt)
    z0_hat, eps_hat = convert(param, prior.target(z0, eps, t), xt, a, s)
    torch.testing.assert_close(z0_hat, z0)
    torch.testing.assert_close(eps_hat, eps)


def test_linear_schedule_values():
    s = VPSchedule.linear(1000, 1e-4, 0.02)
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - b, 0))
    torch.testing.assert_close(s.betas, b)
    # fractional times interpolate between neighbours
    ab = s.alpha_bar(torch.tensor([10.5]))
    assert s.alphas_cumprod[11] < ab < s.alphas_cumprod[10]


def test_cosine_schedule_shape():
    s = VPSchedule.cosine(1000)
    assert s.alphas_cumprod[0] > 0.999 and s.alphas_cumprod[-1] < 1e-3
    assert (s.betas <= 0.999 + 1e-12).all()


def test_vp_continuous_matches_discrete_limit():
    cont, disc = VPContinuousSchedule(0.1, 20.0), VPSchedule.linear(1000, 1e-4, 0.02)
    a_c, _ = cont.alpha_sigma(torch.tensor(0.5))
    a_d, _ = disc.alpha_sigma(torch.tensor(500))
    assert abs(float(a_c) - float(a_d)) < 5e-3


def test_ve_sigmas_geometric():
    s = VESchedule(0.01, 378.0, num_steps=2000)
    sig = s.sigmas
    assert math.isclose(float(sig[0]), 0.01) and math.isclose(float(sig[-1]), 378.0, rel_tol=1e-9)
    r = sig[1:] / sig[:-1]
    assert torch.allclose(r, r[0].expand_as(r))


def test_timestep_grids():
    s = VPSchedule.linear()
    g = s.ddim_timesteps(50)
    assert g[0] == 980 and g[-1] == 0 and len(g) == 50
    assert s.ddpm_timesteps()[0] == 999 and len(s.ddpm_timesteps()) == 1000
    assert len(s.pc_timesteps(100)) == 100
    ve = VESchedule()
    pc = ve.pc_timesteps(2000, eps=1e-5)
    assert float(pc[0]) == 1.0 and abs(float(pc[-1]) - 1e-5) < 1e-9
    with pytest.raises(ValueError):
        ve.ddpm_timesteps()
    with pytest.raises(ValueError):
        s.ddim_timesteps(2000)


def test_t_from_noise_to_signal():
    for s in (VPSchedule.linear(), VPContinuousSchedule(), VESchedule()):
        t = s.t_from_noise_to_signal(0.2)
        assert abs(float(s.noise_to_signal(t)) - 0.2) < (0.01 if s.discrete else 1e-6)


def test_schedule_config_roundtrip():
    for s in (
        VPSchedule.linear(100, 1e-3, 0.05),
        VPSchedule.cosine(50),
        VPSchedule.scaled_linear(20),
        VPContinuousSchedule(0.2, 10),
        VESchedule(0.02, 10, 30, True),
        VPSchedule(alphas_cumprod=torch.linspace(0.99, 0.01, 10)),
    ):
        s2 = schedule_from_config(s.to_config())
        t = torch.tensor([0, 5]) if s.discrete else torch.tensor([0.1, 0.7])
        torch.testing.assert_close(s2.alpha_sigma(t)[1], s.alpha_sigma(t)[1])


def test_bad_schedules_raise():
    with pytest.raises(ValueError):
        VPSchedule(betas=[0.1, 1.5])
    with pytest.raises(ValueError):
        VESchedule(1.0, 0.5)
    with pytest.raises(ValueError):
        schedule_from_config({"type": "nope"})
    with pytest.raises(ValueError):
        DiffusionPrior(nn.Identity(), VPSchedule.linear(), "bogus")
    with pytest.raises(ValueError):
        DiffusionPrior(nn.Identity(), VESchedule(), "eps", time_input="index")


def test_ddim_step_deterministic_consistency():
    """With exact (z0, ε) estimates, a DDIM η=0 step lands exactly on the forward process at t_prev."""
    sched = VPSchedule.linear()
    prior = DiffusionPrior(nn.Identity(), sched, "eps")
    z0, eps = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    t, tp = 500, 300
    torch.testing.assert_close(prior.ddim_step(z0, eps, t, tp, eta=0.0), prior.add_noise(z0, eps, tp))
    # the end of the chain returns the clean estimate; a stochastic step needs noise
    assert torch.equal(prior.ddim_step(z0, eps, t, None), z0)
    with pytest.raises(ValueError, match="needs noise"):
        prior.ddim_step(z0, eps, t, tp, eta=0.5)


@pytest.mark.parametrize("mixing", ["ddim", "dds"])
def test_ddim_step_noise_is_drawn_only_when_stochastic(mixing):
    prior = DiffusionPrior(nn.Identity(), VPSchedule.linear(), "eps")
    z0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    draws = []

    def noise():
        draws.append(1)
        return torch.ones_like(z0)

    prior.ddim_step(z0, eps, 500, 300, eta=0.0, noise=noise, mixing=mixing)
    assert draws == []
    a2, c_eps, c_noise = prior.schedule.ddim_coefficients(500, 300, 0.7, mixing)
    out = prior.ddim_step(z0, eps, 500, 300, eta=0.7, noise=noise, mixing=mixing)
    assert draws == [1] and c_noise > 0
    torch.testing.assert_close(out, a2 * z0 + c_eps * eps + c_noise)
