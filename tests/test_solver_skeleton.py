"""Adding a solver is one short file: test solvers written only against the public skeleton, on a pixel
prior and on a tiny *latent* prior (autoencoder + latent diffusion), with guidance through the decoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from diffrecon.operators import ParallelBeam2D, SliceWise, sparse_angles
from diffrecon.priors import DiffusionPrior, LatentPrior, Prior, VPSchedule
from diffrecon.recon.diffusion import DiffusionSolver, SolveContext, SolverState


# ------------------------------------------------------------------------------------------------
# two solvers, public API only
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ChainState(SolverState):
    x_t: torch.Tensor


class GuidedDDIM(DiffusionSolver[ChainState]):
    """(Latent) DPS in a dozen lines: DDIM-η plus ζ·∇‖y − A·decode(ẑ0(x_t))‖ per slice."""

    method = "test_guided_ddim"

    def __init__(self, prior, steps=5, zeta=0.0, eta=0.5, **kw):
        super().__init__(prior, steps, **kw)
        self.zeta, self.eta = zeta, eta

    def settings(self):
        return {**super().settings(), "zeta": self.zeta, "eta": self.eta}

    def timesteps(self):
        return self.prior.schedule.ddim_timesteps(self.steps)

    def init_state(self, ctx: SolveContext) -> ChainState:
        return ChainState(x0=torch.zeros(ctx.shape, dtype=ctx.dtype), x_t=self.randn(ctx))

    def loss(self, z0, rows, ctx):
        r = ctx.y[rows] - ctx.op2d(self.to_image(z0))
        return r.flatten(1).norm(dim=1).sum()

    def step(self, i, state, ctx):
        t, t_next = self.time_pair(i, ctx)
        guidance = (lambda z, rows: self.loss(z, rows, ctx)) if self.zeta > 0 else None
        z0, eps, grad = self.predict(state.x_t, t, ctx, guidance=guidance)
        x_t = self.ddim_step(z0, eps, t, t_next, self.eta, ctx)
        if grad is not None:
            x_t = x_t - self.zeta * grad
        return ChainState(x0=self.to_image(z0), x_t=x_t)


# ------------------------------------------------------------------------------------------------
# tiny priors
# ------------------------------------------------------------------------------------------------
class TinyEpsNet(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch + 1, ch, 3, padding=1)

    def forward(self, x, c):
        tmap = (c.float() / 1000.0).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return 0.1 * self.conv(torch.cat([x, tmap], dim=1))


class TinyAutoencoder(nn.Module):
    """1 × 16 × 16 images ↔ 2 × 8 × 8 latents (a strided conv and a transposed conv)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 2, 2, stride=2)
        self.dec = nn.ConvTranspose2d(2, 1, 2, stride=2)

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)


def latent_prior(seed=0) -> LatentPrior:
    torch.manual_seed(seed)
    diffusion = DiffusionPrior(TinyEpsNet(2), VPSchedule.linear(100), "eps", "index",
                               data_scale=1.0, data_shift=0.0, image_shape=(2, 8, 8))
    return LatentPrior(TinyAutoencoder(), diffusion, scale_factor=0.5, image_shape=(1, 16, 16)).eval()


def pixel_prior(seed=0) -> DiffusionPrior:
    torch.manual_seed(seed)
    net = TinyEpsNet(1)
    return DiffusionPrior(net, VPSchedule.linear(100), "eps", "index", image_shape=(1, 16, 16)).eval()


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(1)
    vol = torch.rand(3, 16, 16)
    A = SliceWise(ParallelBeam2D((16, 16), sparse_angles(6)))
    return A(vol), A


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
def test_both_priors_implement_the_declared_interface():
    assert isinstance(pixel_prior(), Prior) and isinstance(latent_prior(), Prior)
    lp = latent_prior()
    assert lp.state_shape == (2, 8, 8) and lp.image_shape == (1, 16, 16) and lp.is_latent
    assert lp.encode(torch.rand(4, 1, 16, 16)).shape == (4, 2, 8, 8)


@pytest.mark.parametrize("make_prior", [pixel_prior, latent_prior], ids=["pixel", "latent"])
def test_a_solver_written_against_the_skeleton_runs_on_either_prior(make_prior, problem, tmp_path):
    y, A = problem
    prior = make_prior()
    solver = GuidedDDIM(prior, steps=5, zeta=0.05, chunk_size=2, progress=False)
    x, rec = solver(y, A)
    assert x.shape == (3, 16, 16) and torch.isfinite(x).all()
    assert rec.nfe == 5 and rec.slice_evaluations == 15 and rec.method == "test_guided_ddim"
    x2, _ = GuidedDDIM(prior, steps=5, zeta=0.05, chunk_size=3, progress=False)(y, A)
    assert torch.allclose(x, x2, atol=1e-5)  # chunking does not change the result
    # staged run through a state file of the typed state == the uninterrupted run
    state = tmp_path / "state.pt"
    GuidedDDIM(prior, steps=5, zeta=0.05, chunk_size=2, progress=False)(y, A, save_state=state, stop_after=2)
    x3, rec3 = GuidedDDIM(prior, steps=5, zeta=0.05, chunk_size=2, progress=False)(y, A, resume=state)
    assert rec3.resumed_at == 2 and rec3.nfe == 5 and torch.equal(x, x3)


def test_guidance_gradient_goes_through_the_decoder(problem):
    """The skeleton's chunked guided prediction equals one autograd pass over the network and decoder."""
    y, A = problem
    prior = latent_prior()
    solver = GuidedDDIM(prior, steps=5, zeta=1.0, chunk_size=2, progress=False)
    ctx = solver._context(y, A, 0, (3, 16, 16), None, None)
    x_t = torch.randn(3, 2, 8, 8)
    z0, eps, grad = solver.predict(x_t, 40, ctx, guidance=lambda z, rows: solver.loss(z, rows, ctx))
    xr = x_t.clone().requires_grad_(True)
    z_ref, _ = prior.predict(xr, torch.full((3,), 40))
    r = y - A.op2d(prior.decode(z_ref)[:, 0])
    (g_ref,) = torch.autograd.grad(r.flatten(1).norm(dim=1).sum(), xr)
    assert torch.allclose(z0, z_ref.detach(), atol=1e-6) and torch.allclose(grad, g_ref, atol=1e-5)
    assert float(grad.abs().max()) > 0
    # and it depends on the decoder: a different decoder gives a different gradient
    with torch.no_grad():
        prior.autoencoder.dec.weight.mul_(2.0)
    _, _, grad2 = solver.predict(x_t, 40, ctx, guidance=lambda z, rows: solver.loss(z, rows, ctx))
    assert not torch.allclose(grad, grad2)


def test_latent_guidance_reduces_the_data_misfit(problem):
    y, A = problem
    prior = latent_prior()

    def misfit(zeta):
        x, _ = GuidedDDIM(prior, steps=10, zeta=zeta, eta=0.0, progress=False)(y, A)
        return float((A(x) - y).norm())

    assert misfit(0.3) < 0.8 * misfit(0.0)
