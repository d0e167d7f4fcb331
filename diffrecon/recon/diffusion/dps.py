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

import dataclasses
import math

import torch

from ...errors import InputDataError
from .skeleton import DiffusionSolver, SolveContext
from .state import SolverState

Tensor = torch.Tensor


@dataclasses.dataclass
class DPSState(SolverState):
    """DPS loop state: the model-space iterate ``x_t`` and the last Tweedie estimate ``x0``."""

    x_t: Tensor


class DPS(DiffusionSolver[DPSState]):
    """Per-slice DPS (module docstring).

    Args:
        prior (Prior): 2-D VP (or VE) :class:`~diffrecon.priors.prior.DiffusionPrior`.
        steps: sampler steps (paper 1000).
        zeta: step size ζ of the residual-norm gradient.
        eta: DDIM η (1 = ancestral).
        seed: seed of the solver's generator.
        chunk_size: slices per network call (bounds memory).
        image_scale: image value corresponding to the top of the prior's data range.
        progress: show a tqdm progress bar.
        on_step: ``on_step(i, x, info)`` after each step; see
            :class:`~diffrecon.recon.diffusion.DiffusionSolver`.
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

    def timesteps(self) -> Tensor:
        return self.prior.schedule.ddim_timesteps(self.steps)

    def init_state(self, ctx: SolveContext) -> DPSState:
        if ctx.op2d is None:
            raise InputDataError(
                "DPS: expected a SliceWise operator (the per-slice residual needs the 2-D operator)"
            )
        a, s = self.alpha_sigma(ctx.timesteps[0])
        x = math.sqrt(a * a + s * s) * self.randn(ctx)
        return DPSState(x0=torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device), x_t=x)

    def residual_norms(self, z0: Tensor, rows: slice, ctx: SolveContext) -> Tensor:
        """Σ_k ‖y_k − A x̂0_k‖ over the chunk's slices (the guidance loss; differentiable in ``z0``)."""
        r = ctx.y[rows] - ctx.op2d(self.to_image(z0))
        return (r.abs() if r.is_complex() else r).flatten(1).norm(dim=1).sum()

    def step(self, i: int, state: DPSState, ctx: SolveContext) -> DPSState:
        t, t_next = self.time_pair(i, ctx)
        z0, eps, grad = self.predict(
            state.x_t, t, ctx, guidance=lambda z, rows: self.residual_norms(z, rows, ctx)
        )
        x0 = self.to_image(z0)
        if t_next is None:
            return dataclasses.replace(state, x0=x0)
        x = self.ddim_step(z0, eps, t, t_next, self.eta, ctx)
        return DPSState(x0=x0, x_t=x - self.zeta * grad)
