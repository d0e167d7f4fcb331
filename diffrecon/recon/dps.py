r"""Per-slice Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky, Ye, ICLR 2023) — a baseline.

Each slice k is sampled independently (no cross-slice coupling). One step from t to t′ (model space
:math:`x_t = a_t z_0 + s_t\varepsilon`, image :math:`\hat x_0 = \text{denormalise}(\hat z_0)`):

.. math::
    (\hat z_0, \hat\varepsilon) = \text{prior}(x_t, t), \qquad
    x_{t'} = \text{DDIM}_\eta(x_t, \hat z_0, \hat\varepsilon)
             - \zeta\,\nabla_{x_t}\,\|y_k - A\,\hat x_0(x_t)\|_2 ,

i.e. the gradient of the (un-squared) residual norm of *each slice*, back-propagated through the
network, as in the DPS reference implementation (the step ζ/‖r‖ on ½‖r‖² is the same thing). DDIM-η
with η = 1 is ancestral (DDPM-like) sampling on a strided grid; the paper uses all 1000 steps, ζ ≈ 1.

Needs a :class:`~diffrecon.operators.SliceWise` operator (the residual of a chunk of slices is computed
with the 2-D operator, so back-propagation stays chunk-sized). NFE = ``steps`` (each with a backward pass).
"""

from __future__ import annotations

import math

import torch

from ..errors import InputDataError
from .sampler import Context, DiffusionSolver

Tensor = torch.Tensor


class DPS(DiffusionSolver):
    """Per-slice DPS (module docstring).

    Args:
        prior: 2-D VP (or VE) :class:`~diffrecon.priors.prior.DiffusionPrior`.
        steps: sampler steps (paper 1000).
        zeta: step size ζ of the residual-norm gradient.
        eta: DDIM η (1 = ancestral).
        seed, chunk_size, image_scale, progress, on_step: see
            :class:`~diffrecon.recon.sampler.DiffusionSolver`.
    """

    method = "dps"

    def __init__(
        self,
        prior,
        steps: int = 1000,
        *,
        zeta: float = 1.0,
        eta: float = 1.0,
        seed: int = 0,
        chunk_size: int = 16,
        image_scale: float = 1.0,
        progress: bool = True,
        on_step=None,
    ):
        super().__init__(
            prior,
            steps,
            seed=seed,
            chunk_size=chunk_size,
            image_scale=image_scale,
            progress=progress,
            on_step=on_step,
        )
        if not (math.isfinite(zeta) and zeta >= 0):
            raise InputDataError(f"DPS: expected zeta >= 0, found {zeta}")
        if not 0.0 <= float(eta) <= 1.0:
            raise InputDataError(f"DPS: expected 0 <= eta <= 1, found {eta}")
        self.zeta, self.eta = float(zeta), float(eta)

    def settings(self) -> dict:
        s = super().settings()
        s.update(zeta=self.zeta, eta=self.eta)
        return s

    def _timesteps(self) -> Tensor:
        return self.prior.schedule.ddim_timesteps(self.steps)

    def _init(self, ctx: Context) -> dict[str, Tensor]:
        if ctx.op.op2d is None:
            raise InputDataError(
                "DPS: expected a SliceWise operator (the per-slice residual needs the 2-D operator)"
            )
        a, s = self.alpha_sigma(ctx.timesteps[0])
        x = math.sqrt(a * a + s * s) * self.randn(ctx)
        return {"x_t": x, "x0": torch.zeros_like(x)}

    def _guided_predict(self, x_t: Tensor, t: float, ctx: Context):
        """Chunked network call with the gradient of Σ_k ‖y_k − A x̂0_k‖ w.r.t. x_t."""
        op2d = ctx.op.op2d
        zs, es, gs = [], [], []
        start = 0
        for chunk in torch.split(x_t, self.chunk_size, dim=0):
            n = chunk.shape[0]
            with torch.enable_grad():
                xc = chunk.detach().requires_grad_(True)
                tt = torch.full((n,), float(t), device=chunk.device)
                if ctx.extra.get("discrete_t"):
                    tt = tt.round().long()
                z0, eps = self.prior.predict(xc.unsqueeze(1), tt)
                z0, eps = z0[:, 0], eps[:, 0]
                r = ctx.y[start : start + n] - op2d(self.to_image(z0))
                norms = (r.abs() if r.is_complex() else r).flatten(1).norm(dim=1)
                (grad,) = torch.autograd.grad(norms.sum(), xc)
            zs.append(z0.detach())
            es.append(eps.detach())
            gs.append(grad)
            start += n
        self._nfe += 1
        self._slice_evals += x_t.shape[0]
        return torch.cat(zs), torch.cat(es), torch.cat(gs)

    def _step(self, i: int, state: dict[str, Tensor], ctx: Context) -> dict[str, Tensor]:
        t = float(ctx.timesteps[i])
        z0, eps, grad = self._guided_predict(state["x_t"], t, ctx)
        x0 = self.to_image(z0)
        if i + 1 == len(ctx.timesteps):
            return {"x_t": state["x_t"], "x0": x0}
        a, s = self.alpha_sigma(t)
        a2, s2 = self.alpha_sigma(float(ctx.timesteps[i + 1]))
        sig = self.eta * (s2 / s) * math.sqrt(max(0.0, 1.0 - (a * a) / (a2 * a2)))
        x = a2 * z0 + math.sqrt(max(0.0, s2 * s2 - sig * sig)) * eps
        if sig > 0:
            x = x + sig * self.randn(ctx)
        return {"x_t": x - self.zeta * grad, "x0": x0}
