r"""DiffPIR — diffusion plug-and-play image restoration (Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool,
CVPR 2023 workshops, "Denoising Diffusion Models for Plug-and-Play Image Restoration").

DiffPIR splits :math:`\min_x \frac{1}{2\sigma_n^2}\|y-Ax\|^2 + \lambda\mathcal P(x)` by half-quadratic
splitting and lets the diffusion prior solve the prior sub-problem (a Gaussian denoising at the noise level
of the current iterate). One step from time t to t′ < t (model space :math:`x_t = a_t z_0 + s_t\varepsilon`,
images :math:`x = \text{decode}(z)` in the prior's data units, :math:`\bar\sigma_t = s_t/a_t`):

1. prior sub-problem (one network call): :math:`\hat z_0 = \text{clip}(\mathbb E[z_0\mid x_t])`,
   :math:`\hat x_0 = \text{decode}(\hat z_0)`;
2. data sub-problem (a proximal map, in image units):

   .. math::
       \hat x_0' = \arg\min_x \|y - Ax\|^2 + \rho_t\|x - \hat x_0\|^2
       \;\Longleftrightarrow\; (A^\top A + \rho_t I)\,x = A^\top y + \rho_t\hat x_0,
       \qquad \rho_t = \lambda\,\frac{\sigma_n^2}{\bar\sigma_t^2},

   solved by ``cg_iter`` conjugate-gradient steps warm-started at :math:`\hat x_0` (per slice), or exactly
   through the per-slice SVD (``data_solver="svd"``: a :class:`~diffrecon.operators.Mask` is diagonal; other
   small slice operators use the dense SVD of :func:`~diffrecon.recon.diffusion.ddrm.slice_svd`);
   :math:`\sigma_n` is floored at ``sigma_floor`` (the released code's ``max(0.001, σ_n)``);
3. re-noising with the *effective* noise of the corrected estimate
   :math:`\hat z_0' = \text{encode}(\hat x_0')`:

   .. math::
       \hat\varepsilon = \frac{x_t - a_t\hat z_0'}{s_t},\qquad
       x_{t'} = a_{t'}\hat z_0' + s_{t'}\big(\sqrt{1-\zeta}\,\hat\varepsilon + \sqrt{\zeta}\,\xi\big),
       \quad \xi\sim\mathcal N(0, I).

At the last step (t = 0) the data step and the re-noising are skipped and, as in the released code and
deepinv 0.5.0, the result is the iterate itself, :math:`\text{decode}(x_0)` (``output="iterate"``; the last
network call then only feeds ``on_step``); ``output="tweedie"`` returns the last step's corrected Tweedie
estimate instead (its data step is then applied).

**Time grid** (``skip="quad"``, the paper's): with T training steps and n sampler steps,
:math:`k_i = \lfloor\sqrt{i\,T^2/(n-1)}\rfloor` (i = 0 … n−1), :math:`k_{n-1} \leftarrow k_{n-1}-1`, and
:math:`t_i = T-1-k_i`: T−1 first, 0 last, large strides early and small ones near t = 0 (T = 1000, n = 100:
999, 899, 857, 825, …, 10, 5, 0). ``skip="uniform"`` uses ``prior.schedule.ddim_timesteps(n)`` instead.
NFE = ``steps``.

**Initialisation**: ``init="noise"`` draws :math:`x_T = \sqrt{a_T^2+s_T^2}\,\xi` (= ξ for VP, the paper's
:math:`x_T\sim\mathcal N(0,I)`); ``init="adjoint"`` is deepinv's
:math:`x_T = a_T\big(\text{encode}(A^\top y) + \sqrt{\bar\sigma_T^2 - (c\,\sigma_n)^2}\,\xi\big)` with c the
prior's ``data_scale`` (the released scripts start from the degraded image the same way; with
:math:`a_T\approx 0.006` both are within a fraction of a percent of pure noise).

**3-D extension** (``mode="3d"``; the cross-slice coupling of DDS/DiffusionMBIR): the data sub-problem gains
a total-variation term along the slice axis and becomes one ADMM iteration of

.. math::
    \min_x \tfrac12\|Ax-y\|^2 + \tfrac{\rho_t}{2}\|x-\hat x_0\|^2 + \lambda_{TV}\|D_z x\|_1 ,

with split variables (d, u) shared across all diffusion steps: x ← CG on
:math:`(A^\top A + \rho_t I + \mu D_z^\top D_z)x = A^\top y + \rho_t\hat x_0 + \mu D_z^\top(d-u)`
(``cg_iter`` steps from :math:`\hat x_0`, inner products over the whole volume), d ← soft(D_z x + u,
λ_TV/μ), u ← u + D_z x − d (:class:`ProximalADMMTV`). The ½ in front of the quadratic terms leaves the
paper's x-update unchanged.

**Units.** σ_n is the noise standard deviation of the measurements of an image in the prior's data units
(of ``y`` when ``image_scale = 1``); :math:`\bar\sigma_t` is the model-space noise-to-signal ratio (for the
[0, 1] ↔ [−1, 1] priors this is the released code's pairing: σ_n in [0, 1] units, :math:`\bar\sigma_t` in
[−1, 1] units). λ and ζ were tuned in the paper for deblurring, super-resolution and inpainting of 256²
face/ImageNet photographs, not for CT or MRI: treat them as starting points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from ...errors import InputDataError
from ...operators.elementary import Mask
from ...operators.linalg import conjugate_gradient
from ..classical import ADMMTV, soft_threshold
from .skeleton import DiffusionSolver, SolveContext, resolve_axes
from .state import SolverState

Tensor = torch.Tensor

SKIPS = ("quad", "uniform")
INITS = ("noise", "adjoint")
OUTPUTS = ("iterate", "tweedie")
DATA_SOLVERS = ("auto", "cg", "svd")
MODES = ("2d", "3d")

#: The released DiffPIR scripts' settings per task (``main_ddpir_*.py`` with their experiment loops):
#: Gaussian deblurring at σ_n = 0.05 runs λ = 7, ζ = 0.3 with 100 NFE; random-mask inpainting, noiseless,
#: λ = 1, ζ = 1 with 20 NFE. (The ×4 super-resolution script sweeps λ over 2…12 at ζ = 0.25 without
#: fixing one value, so it has no preset.)
PAPER_TASKS = {
    "deblur": {"steps": 100, "lam": 7.0, "zeta": 0.3},
    "inpaint": {"steps": 20, "lam": 1.0, "zeta": 1.0},
}


class ProximalADMMTV(ADMMTV):
    r""":class:`~diffrecon.recon.classical.ADMMTV` with a proximal anchor term (what DiffPIR's and DDRM's
    3-D versions need): one :meth:`prox_step` is one scaled-form ADMM iteration of

    .. math::
        \min_x\ \tfrac{\delta}{2}\|Ax-y\|^2 + \tfrac{w}{2}\|x-a\|^2 + \lambda\textstyle\sum_k\|D_k x\|_1 ,

    with δ = 1 (``data=True``) or 0 (``data=False``: a pure TV proximal map of the anchor a):

    * x ← CG (``cg_iter`` steps from ``x``) on :math:`(\delta A^\top A + wI + \mu\sum_k D_k^\top D_k)x
      = \delta A^\top y + wa + \mu\sum_k D_k^\top(d_k-u_k)`;
    * d_k ← soft(D_k x + u_k, λ/μ), u_k ← u_k + D_k x − d_k.

    The split variables (d, u), the sharding support and ``state_dict`` are ADMMTV's (μ is its ``rho``).

    Args:
        y: measurements (used for :math:`A^\\top y` when ``data=True``).
        operator: the volume operator A on slice-first volumes.
        lam: λ > 0, in the units of ½‖Ax − y‖².
        rho: ADMM penalty μ > 0.
        axes: TV axes (negative indices into the domain, −3 = slices).
        boundary: ``"periodic"`` or ``"neumann"``.
        cg_iter: CG steps per x-update.
        comm: communicator of a sharded volume (``None``: one process).
        data: keep the data term (δ = 1) or drop it (δ = 0).
    """

    def __init__(self, y, operator, lam, rho, axes, boundary="periodic", cg_iter=5, *, comm=None,
                 data: bool = True):
        super().__init__(y, operator, lam, rho, axes, boundary=boundary, cg_iter=cg_iter, comm=comm)
        self.data = bool(data)

    def prox_step(self, x: Tensor, anchor: Tensor, weight: float) -> Tensor:
        """One ADMM iteration from ``x`` with the anchor ``anchor`` of weight ``weight`` (> 0); returns x."""
        w = float(weight)

        def normal(v: Tensor) -> Tensor:
            out = w * v
            if self.data:
                out = out + self.operator.normal(v)
            for d in self.diffs:
                out = out + self.rho * d.adjoint(d.forward(v))
            return out

        rhs = w * anchor + (self.aty if self.data else 0.0)
        for d, z, u in zip(self.diffs, self.z, self.u, strict=True):
            rhs = rhs + self.rho * d.adjoint(z - u)
        x = conjugate_gradient(normal, rhs, x0=x, n_iter=self.cg_iter, n_dims=self.n_dims, dot=self._dot)
        for i, d in enumerate(self.diffs):
            dx = d.forward(x)
            self.z[i] = soft_threshold(dx + self.u[i], self.thresholds[i])
            self.u[i] = self.u[i] + dx - self.z[i]
        return x


def quad_timesteps(n: int, num_steps: int) -> Tensor:
    """DiffPIR's quadratic time grid (module docstring): ``n`` descending integer times, T−1 … 0."""
    if n < 2:
        raise InputDataError(f"DiffPIR: the quadratic time grid needs steps >= 2, found {n}")
    if n > num_steps:
        raise InputDataError(f"DiffPIR: {n} steps requested but the schedule has only {num_steps}")
    k = torch.sqrt(torch.linspace(0.0, float(num_steps) ** 2, n, dtype=torch.float64)).floor().long()
    k[-1] -= 1
    return (num_steps - 1) - k


@dataclasses.dataclass
class DiffPIRState(SolverState):
    """DiffPIR loop state.

    Attributes:
        x_t: model-space iterate ``(S, *state_shape)`` at the current time.
        admm: the z-TV ADMM state with its shared split variables (``mode="3d"``), else ``None``.
    """

    x_t: Tensor
    admm: ProximalADMMTV | None


class DiffPIR(DiffusionSolver[DiffPIRState]):
    """DiffPIR on diffrecon's solver skeleton (see the module docstring for the math).

    Args:
        prior (Prior): a 2-D pixel-space :class:`~diffrecon.priors.prior.DiffusionPrior` (VP, as in the
            paper; ``skip="quad"`` needs a discrete schedule).
        steps: sampler steps = NFE (paper: 100 for deblurring/SR, 20 for inpainting).
        lam: λ of :math:`\\rho_t = \\lambda\\sigma_n^2/\\bar\\sigma_t^2` (paper's form of the data step).
        zeta: ζ ∈ [0, 1], the share of fresh noise in the re-noising.
        sigma_n: noise standard deviation of the measurements (prior data units; module docstring).
        sigma_floor: lower bound applied to σ_n in ρ_t and in the ``"adjoint"`` initialisation
            (released code: 0.001; 0 disables it, and σ_n must then be > 0).
        skip: ``"quad"`` (paper) or ``"uniform"`` time grid.
        init: ``"noise"`` (paper) or ``"adjoint"`` (deepinv) initialisation.
        clip_x0: clamp Tweedie's estimate to the prior's data range before the data step (released code
            and deepinv do).
        output: ``"iterate"`` (reference codes) or ``"tweedie"`` (module docstring).
        data_solver: ``"cg"``, ``"svd"`` (exact, per-slice SVD; 2-D mode) or ``"auto"`` (``"svd"`` for a
            :class:`~diffrecon.operators.Mask` slice operator, else ``"cg"``).
        cg_iter: CG steps per data step (warm-started at :math:`\\hat x_0`).
        mode: ``"2d"`` (per slice, the paper) or ``"3d"`` (one z-TV ADMM iteration per step).
        tv_lam: λ_TV of the 3-D data step, in the units of ½‖Ax − y‖² (untuned default: the shrink
            threshold λ_TV/μ = 0.004 of DDS's CT setting).
        tv_rho: ADMM penalty μ of the 3-D data step (untuned default 5: small against ‖AᵀA‖ of CT, so a few
            CG steps still move x towards the data; DDS's μ = 51 needs ~20 CG steps here).
        tv_axes: TV axes of the 3-D data step (``("z",)``; ``"all"`` or any of ``"z","y","x"``).
        boundary: ``"periodic"`` or ``"neumann"`` slice-axis differences.
        max_svd_pixels: largest slice (H·W) for a dense SVD (``data_solver="svd"``; see
            :func:`~diffrecon.recon.diffusion.ddrm.slice_svd`).
        seed: seed of the solver's generator.
        chunk_size: slices per network call (bounds memory).
        image_scale: image value corresponding to the top of the prior's data range.
        progress: show a tqdm progress bar.
        on_step: ``on_step(i, x, info)`` after each step; see
            :class:`~diffrecon.recon.diffusion.DiffusionSolver`.

    Presets: :meth:`paper` (the released per-task settings) and :meth:`deepinv` (deepinv 0.5.0's
    ``deepinv.sampling.DiffPIR`` defaults).

    Example (inpainting of four 64² slices with the bundled prior, the paper's inpainting settings)::

        >>> from diffrecon.datasets import sample_volume
        >>> from diffrecon.operators import Mask, SliceWise
        >>> from diffrecon.priors import load
        >>> vol = sample_volume()[0][:, :, 30:34].permute(2, 0, 1).contiguous()
        >>> mask = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < 0.5
        >>> A = SliceWise(Mask(mask))
        >>> x, record = DiffPIR.paper(load("head-64"), task="inpaint", steps=5, progress=False)(A(vol), A)
        >>> x.shape, record.method, record.nfe, record.settings["lam"], record.settings["zeta"]
        (torch.Size([4, 64, 64]), 'diffpir', 5, 1.0, 1.0)
    """

    method = "diffpir"

    def __init__(
        self,
        prior,
        steps: int = 100,
        *,
        lam: float = 7.0,
        zeta: float = 0.3,
        sigma_n: float = 0.0,
        sigma_floor: float = 1e-3,
        skip: str = "quad",
        init: str = "noise",
        clip_x0: bool = True,
        output: str = "iterate",
        data_solver: str = "auto",
        cg_iter: int = 5,
        mode: str = "2d",
        tv_lam: float = 0.02,
        tv_rho: float = 5.0,
        tv_axes: Sequence[str | int] | str = ("z",),
        boundary: str = "periodic",
        max_svd_pixels: int = 4096,
        seed: int = 0,
        chunk_size: int = 16,
        image_scale: float = 1.0,
        progress: bool = True,
        on_step=None,
    ):
        super().__init__(prior, steps, seed=seed, chunk_size=chunk_size, image_scale=image_scale,
                         progress=progress, on_step=on_step)
        if self._latent:
            raise InputDataError(
                "DiffPIR: expected a pixel-space DiffusionPrior (the data step and the clipping act on "
                "images); found a latent prior"
            )
        for name, v in (("lam", lam), ("sigma_n", sigma_n), ("sigma_floor", sigma_floor)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputDataError(f"DiffPIR: expected {name} >= 0 (finite), found {v!r}")
        if lam <= 0:
            raise InputDataError(f"DiffPIR: expected lam > 0, found {lam}")
        if max(sigma_n, sigma_floor) <= 0:
            raise InputDataError(
                "DiffPIR: sigma_n = 0 with sigma_floor = 0 gives ρ_t = 0 (no anchor to the prior's "
                "estimate); pass the measurement noise level sigma_n > 0 or keep the floor (1e-3)"
            )
        if not 0.0 <= float(zeta) <= 1.0:
            raise InputDataError(f"DiffPIR: expected 0 <= zeta <= 1, found {zeta}")
        for name, v, allowed in (("skip", skip, SKIPS), ("init", init, INITS), ("output", output, OUTPUTS),
                                 ("data_solver", data_solver, DATA_SOLVERS), ("mode", mode, MODES)):
            if v not in allowed:
                raise InputDataError(f"DiffPIR: {name} must be one of {allowed}, found {v!r}")
        if int(cg_iter) < 1:
            raise InputDataError(f"DiffPIR: expected cg_iter >= 1, found {cg_iter}")
        if mode == "3d":
            if data_solver == "svd":
                raise InputDataError("DiffPIR: mode='3d' solves its data step by CG; use data_solver='cg'")
            ADMMTV.check_settings(tv_lam, tv_rho, cg_iter, boundary)
        if skip == "quad":
            if not getattr(prior.schedule, "discrete", False):
                raise InputDataError(
                    f"DiffPIR: skip='quad' needs a discrete schedule; {type(prior.schedule).__name__} is "
                    "continuous (use skip='uniform')"
                )
            quad_timesteps(self.steps, prior.schedule.num_steps)  # fail now, not at solve time
        self.lam, self.zeta = float(lam), float(zeta)
        self.sigma_n, self.sigma_floor = float(sigma_n), float(sigma_floor)
        self.skip, self.init, self.clip_x0, self.output = skip, init, bool(clip_x0), output
        self.data_solver, self.cg_iter, self.mode = data_solver, int(cg_iter), mode
        self.tv_lam, self.tv_rho, self.tv_axes, self.boundary = float(tv_lam), float(tv_rho), \
            resolve_axes(tv_axes), boundary
        self.max_svd_pixels = int(max_svd_pixels)

    # -- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls, prior, task: str = "deblur", **kw):
        """The released code's settings for ``task`` (:data:`PAPER_TASKS`): ``"deblur"`` — 100 steps,
        λ = 7, ζ = 0.3 (Gaussian deblurring at σ_n = 0.05); ``"inpaint"`` — 20 steps, λ = 1, ζ = 1
        (noiseless random-mask inpainting). Both: quadratic grid, clipped Tweedie estimates, σ_n floored at
        0.001, x_T ~ N(0, I), the iterate at t = 0 as the result. Tuned for 256² photographs, not CT/MRI;
        pass ``sigma_n`` (the data's noise level) and any override as keywords.
        """
        if task not in PAPER_TASKS:
            raise InputDataError(f"DiffPIR.paper: task must be one of {sorted(PAPER_TASKS)}, found {task!r}")
        params = dict(PAPER_TASKS[task], skip="quad", init="noise", clip_x0=True, sigma_floor=1e-3,
                      output="iterate")
        params.update(kw)
        return cls(prior, **params)

    @classmethod
    def deepinv(cls, prior, **kw):
        """deepinv 0.5.0's ``DiffPIR`` defaults: 100 steps, ζ = 0.1, σ_n = 0.05 (its default when the
        physics carries no Gaussian noise level; pass the real one), no σ floor, the ``"adjoint"``
        initialisation, clipped estimates, the iterate at t = 0 as the result, and 50 CG steps (deepinv's
        ``max_iter``; it also stops at a relative residual of 1e-4, this solver does not).

        deepinv's ``lambda_ = 7`` is **λ = 14 here**: its data step is the proximal map with γ = 1/(2ρ_t) of
        ½‖Ax − y‖², i.e. :math:`(A^\\top A + 2\\rho_t I)x = A^\\top y + 2\\rho_t\\hat x_0`, twice the
        paper's ρ_t.
        Pass ``lam=2 * lambda_`` to transfer another deepinv value.
        """
        params = dict(steps=100, lam=14.0, zeta=0.1, sigma_n=0.05, sigma_floor=0.0, skip="quad",
                      init="adjoint", clip_x0=True, output="iterate", cg_iter=50)
        params.update(kw)
        return cls(prior, **params)

    def settings(self) -> dict:
        s = super().settings()
        s.update(lam=self.lam, zeta=self.zeta, sigma_n=self.sigma_n, sigma_floor=self.sigma_floor,
                 skip=self.skip, init=self.init, clip_x0=self.clip_x0, output=self.output,
                 data_solver=self.data_solver, cg_iter=self.cg_iter, mode=self.mode)
        if self.mode == "3d":
            s.update(tv_lam=self.tv_lam, tv_rho=self.tv_rho, tv_axes=list(self.tv_axes),
                     boundary=self.boundary)
        return s

    @property
    def sigma(self) -> float:
        """The noise level used in ρ_t: max(σ_n, σ_floor)."""
        return max(self.sigma_n, self.sigma_floor)

    def rho(self, t: float) -> float:
        """:math:`\\rho_t = \\lambda\\sigma^2/\\bar\\sigma_t^2` with :math:`\\bar\\sigma_t = s_t/a_t`."""
        a, s = self.alpha_sigma(t)
        return self.lam * self.sigma**2 / (s / a) ** 2

    # -- hooks ----------------------------------------------------------------------------------
    def timesteps(self) -> Tensor:
        if self.skip == "quad":
            return quad_timesteps(self.steps, self.prior.schedule.num_steps)
        return self.prior.schedule.ddim_timesteps(self.steps)

    def _solver_kind(self, ctx: SolveContext) -> str:
        if self.mode == "3d":
            return "admm"
        if self.data_solver == "auto":
            return "svd" if isinstance(ctx.op2d, Mask) else "cg"
        if self.data_solver == "svd" and ctx.op2d is None:
            raise InputDataError("DiffPIR: data_solver='svd' needs a SliceWise operator (a per-slice SVD)")
        return self.data_solver

    def init_state(self, ctx: SolveContext) -> DiffPIRState:
        kind = self._solver_kind(ctx)
        self._kind = kind
        self._svd = None
        if kind == "svd":
            from .ddrm import slice_svd

            self._svd = slice_svd(ctx.op2d, max_pixels=self.max_svd_pixels, who="DiffPIR")
        admm = None
        if kind == "admm":
            admm = ProximalADMMTV(ctx.y, ctx.op, self.tv_lam, self.tv_rho, self.tv_axes, self.boundary,
                                  self.cg_iter, comm=ctx.comm, data=True)
        a, s = self.alpha_sigma(ctx.timesteps[0])
        xi = self.randn(ctx)
        if self.init == "noise":
            x_t = math.sqrt(a * a + s * s) * xi
        else:
            c = abs(float(getattr(self.prior, "data_scale", 1.0)))
            spread = math.sqrt(max((s / a) ** 2 - (c * self.sigma) ** 2, 0.0))
            x_t = a * (self.to_model(ctx.aty) + spread * xi)
        return DiffPIRState(x0=torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device), x_t=x_t, admm=admm)

    def data_step(self, x0: Tensor, rho: float, state: DiffPIRState, ctx: SolveContext) -> Tensor:
        """The data sub-problem for a clean estimate ``x0`` (slice-first ``(S, H, W)``, prior data units)."""
        if self._kind == "admm":
            return state.admm.prox_step(x0, x0, rho)
        if self._kind == "svd":
            return self._svd.solve_prox(ctx.aty, x0, rho)
        b = ctx.aty + rho * x0
        n_dims = 2 if ctx.op2d is not None else 3
        dot = _global_dot(ctx) if n_dims == 3 else None
        return conjugate_gradient(lambda v: ctx.op.normal(v) + rho * v, b, x0=x0, n_iter=self.cg_iter,
                                  n_dims=n_dims, dot=dot)

    def step(self, i: int, state: DiffPIRState, ctx: SolveContext) -> DiffPIRState:
        t, t_next = self.time_pair(i, ctx)
        z0, _, _ = self.predict(state.x_t, t, ctx)
        if self.clip_x0:
            z0 = z0.clamp(*self.model_range())
        x0 = self.to_image(z0)
        if t_next is None:
            if self.output == "tweedie":
                x0 = self.data_step(x0, self.rho(t), state, ctx)
            return dataclasses.replace(state, x0=x0)
        x0 = self.data_step(x0, self.rho(t), state, ctx)
        z0 = self.to_model(x0)
        a, s = self.alpha_sigma(t)
        a2, s2 = self.alpha_sigma(t_next)
        eps = (state.x_t - a * z0) / s
        x_next = a2 * z0 + (s2 * math.sqrt(1.0 - self.zeta)) * eps
        if self.zeta > 0:
            x_next = x_next + (s2 * math.sqrt(self.zeta)) * self.randn(ctx)
        return dataclasses.replace(state, x0=x0, x_t=x_next)

    def finish(self, state: DiffPIRState, ctx: SolveContext) -> Tensor:
        if self.output == "iterate":
            return self.to_image(state.x_t)
        return state.x0


def _global_dot(ctx: SolveContext):
    """Volume-wide inner product summed over the ranks of a sharded volume."""
    from ...operators.linalg import inner

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return ctx.comm.sum(inner(a, b, a.ndim))

    return dot
