r"""DDRM — Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song, NeurIPS 2022), per slice.

DDRM runs the reverse diffusion in the spectral coordinates of the forward operator. With the per-slice
SVD :math:`A = U\,\mathrm{diag}(s)\,V^\top` (:func:`slice_svd`) and measurements :math:`y = Ax + \sigma_y n`,
write :math:`\bar y = U^\top y` (so :math:`\bar y_i/s_i = (V^\top A^\top y)_i/s_i^2` on every coordinate
with :math:`s_i > 0`; U itself is never formed). The iterate is kept in the variance-exploding form
:math:`u_t = x_0 + \sigma_t\varepsilon` in the prior's data units, with
:math:`\sigma_t = \bar\sigma_t / c` (:math:`\bar\sigma_t = s_t/a_t` the model-space noise-to-signal
ratio, c the prior's ``data_scale``); the network sees :math:`x_t = a_t\,\text{encode}(u_t)`, which for a
VP prior on its own time grid is exactly the usual iterate. One step from level σ to σ′ < σ:

1. :math:`(\hat z_0,\hat\varepsilon)` = prior(x_t, t), :math:`\hat x_0 = \text{decode}(\hat z_0)`,
   :math:`\hat\varepsilon = (u_t - \hat x_0)/\sigma` (the network's own noise estimate, in data units);
2. with :math:`\hat v = V^\top\hat x_0`, :math:`\hat e = V^\top\hat\varepsilon`,
   :math:`c_\eta=\sqrt{1-\eta^2}` and :math:`\xi\sim\mathcal N(0, I)`, each spectral coordinate of
   :math:`u_{t'}` is

   .. math::
       v_i = \begin{cases}
         \hat v_i + c_\eta\sigma'\hat e_i + \eta\sigma'\xi_i & s_i = 0 \text{ (unobserved)}\\[2pt]
         \hat v_i + c_\eta\sigma'\,\dfrac{\bar y_i/s_i - \hat v_i}{\sigma_y/s_i} + \eta\sigma'\xi_i
             & \sigma' < \sigma_y/s_i \text{ (the iterate is cleaner than the data)}\\[6pt]
         \eta_b\,\bar y_i/s_i + (1-\eta_b)\hat v_i + \sqrt{\sigma'^2 - \eta_b^2\sigma_y^2/s_i^2}\;\xi_i
             & \sigma' \ge \sigma_y/s_i \text{ (noisier than the data)}
       \end{cases}

   and :math:`u_{t'} = V v`;
3. the last step (σ′ = 0) returns :math:`\hat x_0` (which is what the rule gives at σ′ = 0).

Initialisation at the first level σ_T (the paper's :math:`q(x_T\mid y)`): on coordinates with
:math:`s_i\sigma_T > \sigma_y`, :math:`v_i = \bar y_i/s_i + \sqrt{\sigma_T^2-\sigma_y^2/s_i^2}\,\xi_i`;
elsewhere the model-space zero plus :math:`\sigma_T\xi_i`.

**Conventions** (``convention``):

* ``"paper"`` — the reference implementation (``bahjat-kawar/ddrm``): the strided DDPM grid
  ``prior.schedule.ddim_timesteps(steps)`` (T = 1000, 20 steps → 950, 900, …, 0), η = 0.85, η_b = 1.
  Deviation: :math:`x_T = a_T\,\text{encode}(u_T)` where the reference divides by :math:`\sigma_T` (relative
  difference :math:`1-\sqrt{1-\bar\alpha_T}`, 6·10⁻⁵ at t = 950); one ξ is drawn per step for all three cases
  (the reference draws one per case; the cases are disjoint, so the distribution is the same).
* ``"deepinv"`` — ``deepinv.sampling.DDRM`` of deepinv 0.5.0: levels ``linspace(sigma_max, 0, steps)`` in data
  units (default 1 → 0, 100 steps), each evaluated at the network time whose noise level is nearest; the
  unobserved coordinates start from the data-unit zero; a coordinate counts as observed when
  :math:`s_i > \sigma_y` (not :math:`s_i > 0`); and every Gaussian draw is scaled by :math:`1/\sqrt2`
  (deepinv 0.5.0 divides its DDRM noise by √2 while telling the denoiser the full level — reproduced
  here so the two agree, not because it is right). deepinv also adds 1e-6 to divisors; this solver does not.

**How CT (and MRI) get an SVD.** A :class:`~diffrecon.operators.Mask` slice operator (inpainting) has the
exact diagonal SVD V = I, s = |m|. Any other slice operator (parallel/fan-beam CT, single- or multi-coil
Cartesian MRI with ``real_input=True``) gets a **dense, numerically exact** SVD: the n × n Gram matrix
:math:`A^\top A` (n = H·W) is built from n applications of ``op2d.normal`` and diagonalised once in float64
(``torch.linalg.eigh``), :math:`A^\top A = V\mathrm{diag}(s^2)V^\top`; singular values below
``sv_rcond``·max s count as zero. The result is cached per operator object. This is only possible for small
slices: ``max_svd_pixels`` (default 4096 = 64²: two 4096² float64 matrices, 134 MB each, and an eigh of a
few seconds to a minute on a laptop CPU) bounds it, and larger slices are refused with the memory and time
that would be needed. (A real-valued image through a Cartesian mask has singular values in {0, 1/√2, 1}:
measuring k but not −k observes half of the conjugate pair.)

**3-D extension** (``mode="3d"``): before each spectral update the Tweedie estimate is replaced by one
ADMM iteration of the z-TV proximal map
:math:`\min_x \tfrac12\|x-\hat x_0\|^2 + \lambda_{TV}\|D_z x\|_1` (split variables shared across steps,
:class:`~diffrecon.recon.diffusion.diffpir.ProximalADMMTV` with ``data=False``), and
:math:`\hat\varepsilon` is recomputed from it. The TV acts on the clean estimate, not on the noisy
iterate: smoothing :math:`u_t` would remove noise that the next network call is told is there. The
spectral update right after it restores DDRM's data consistency on the observed coordinates, so the
cross-slice coupling shapes the null-space content. The final output is the TV-corrected :math:`\hat x_0`.

NFE = ``steps``. Needs a :class:`~diffrecon.operators.SliceWise` operator and a pixel-space prior.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Sequence

import torch

from ...errors import InputDataError
from ...operators.base import LinearOperator
from ...operators.elementary import Mask
from ..classical import ADMMTV
from .diffpir import ProximalADMMTV
from .skeleton import DiffusionSolver, SolveContext, resolve_axes
from .state import SolverState

Tensor = torch.Tensor

CONVENTIONS = ("paper", "deepinv")
MODES = ("2d", "3d")

_GRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # op2d → (eigenvalues, V), float64


class SliceSVD:
    r"""The SVD :math:`A = U\mathrm{diag}(s)V^\top` of a 2-D slice operator, as DDRM and DiffPIR use it.

    Spectral coordinates of an image ``(..., H, W)`` are stored in a tensor of the same shape (coordinate k
    at flat position k). Only V and s are kept: :math:`\bar y/s` is :math:`V^\top A^\top y / s^2`.

    Attributes:
        kind: ``"diagonal"`` (a :class:`~diffrecon.operators.Mask`: V = I) or ``"dense"`` (from the Gram
            matrix).
        shape: ``(H, W)``.
        s: singular values after the cut-off, ``(H, W)`` float64 (0 = null space).
        V: ``(n, n)`` float64 with the right singular vectors as columns (``None`` for diagonal).
    """

    def __init__(self, kind: str, shape: tuple[int, int], s: Tensor, V: Tensor | None):
        self.kind, self.shape, self.s, self.V = kind, tuple(shape), s, V
        self._on: dict = {}

    def _f64(self, name: str, device) -> Tensor:
        """A float64 attribute on ``device`` (copied once per device)."""
        key = (name, str(device))
        if key not in self._on:
            self._on[key] = getattr(self, name).to(device=device, dtype=torch.float64)
        return self._on[key]

    def vt(self, x: Tensor) -> Tensor:
        """Spectral coordinates :math:`V^\\top x`: ``(..., H, W) → (..., H, W)`` (float64 product)."""
        if self.V is None:
            return x
        return (x.to(torch.float64).flatten(-2) @ self._f64("V", x.device)).view(x.shape).to(x.dtype)

    def v(self, c: Tensor) -> Tensor:
        """Back to images, :math:`V c`: ``(..., H, W) → (..., H, W)`` (float64 product)."""
        if self.V is None:
            return c
        return (c.to(torch.float64).flatten(-2) @ self._f64("V", c.device).T).view(c.shape).to(c.dtype)

    def singular_values(self, ref: Tensor) -> Tensor:
        """``s`` (after the cut-off) in ``ref``'s dtype and device, shape ``(H, W)``."""
        return self.s.to(device=ref.device, dtype=ref.dtype)

    def y_over_s(self, aty: Tensor) -> Tensor:
        """:math:`\\bar y/s = V^\\top A^\\top y/s^2` on observed coordinates (0 elsewhere); ``aty``
        ``(..., H, W)``. Computed in float64: small singular values amplify rounding errors."""
        s = self._f64("s", aty.device)
        c = self.vt(aty.to(torch.float64))
        out = torch.where(s > 0, c / torch.where(s > 0, s * s, torch.ones_like(s)), torch.zeros_like(c))
        return out.to(aty.dtype)

    def solve_prox(self, aty: Tensor, x0: Tensor, rho: float) -> Tensor:
        """Exact :math:`(A^\\top A + \\rho I)^{-1}(A^\\top y + \\rho x_0)` per slice (ρ > 0), in float64.
        The coordinates of :math:`A^\\top y` outside the (cut) range are set to 0, as they are in exact
        arithmetic: for small ρ their rounding errors would otherwise be divided by ρ."""
        s = self._f64("s", aty.device)
        c = torch.where(s > 0, self.vt(aty.to(torch.float64)), torch.zeros((), dtype=torch.float64,
                                                                            device=aty.device))
        c = (c + rho * self.vt(x0.to(torch.float64))) / (s * s + rho)
        return self.v(c).to(x0.dtype)


def slice_svd(
    op2d: LinearOperator, *, rcond: float = 1e-5, max_pixels: int = 4096, who: str = "DDRM"
) -> SliceSVD:
    r"""The per-slice SVD of a 2-D operator (exact diagonal for a Mask, dense and cached otherwise).

    Args:
        op2d: a 2-D operator with a real image domain (``in_shape = (H, W)``).
        rcond: singular values ≤ ``rcond`` · max s are set to 0 (the dense route's numerical null space).
        max_pixels: refuse a dense SVD when H·W exceeds it (memory 16·(H·W)² bytes, time O((H·W)³)).
        who: solver name for error messages.

    Raises:
        InputDataError: a non-2-D or complex-domain operator, a complex mask, or a slice larger than
            ``max_pixels``.
    """
    shape = getattr(op2d, "in_shape", None)
    if shape is None or len(shape) != 2 or -1 in shape:
        raise InputDataError(f"{who}: expected a 2-D slice operator with a known in_shape, found {shape}")
    if not (math.isfinite(rcond) and 0 <= rcond < 1):
        raise InputDataError(f"{who}: expected 0 <= sv_rcond < 1, found {rcond}")
    h, w = (int(v) for v in shape)
    if isinstance(op2d, Mask):
        m = op2d.mask
        if m.is_complex():
            raise InputDataError(f"{who}: expected a real-valued Mask, found dtype {m.dtype}")
        s = m.detach().abs().to(torch.float64)
        s = torch.where(s > rcond * s.max(), s, torch.zeros_like(s))
        return SliceSVD("diagonal", (h, w), s, None)
    n = h * w
    if n > int(max_pixels):
        gib = 2 * 8 * n * n / 2**30
        raise InputDataError(
            f"{who}: a dense SVD of the {h}×{w} slice operator ({type(op2d).__name__}) needs an {n}×{n} Gram "
            f"matrix and its eigenvectors (≈ {gib:.1f} GiB in float64) and an O(n³) eigen-decomposition "
            f"(≈ {n**3 / 1e9:.0f} Gflop); this exceeds max_svd_pixels={int(max_pixels)} (64² by default). "
            "Use a Mask operator (exact diagonal SVD), smaller slices, raise max_svd_pixels knowingly, "
            "or a CG-based solver (DiffPIR, DDS)"
        )
    if op2d not in _GRAMS:
        _GRAMS[op2d] = _gram_eigh(op2d, h, w, who)
    lam, V = _GRAMS[op2d]
    s = lam.clamp_min(0).sqrt()
    s = torch.where(s > rcond * s.max(), s, torch.zeros_like(s))
    return SliceSVD("dense", (h, w), s.view(h, w), V)


@torch.no_grad()
def _gram_eigh(op2d: LinearOperator, h: int, w: int, who: str, batch: int = 256) -> tuple[Tensor, Tensor]:
    n = h * w
    device = op2d._device() if hasattr(op2d, "_device") else torch.device("cpu")
    G = torch.empty(n, n, dtype=torch.float64, device=device)
    for lo in range(0, n, batch):
        k = min(batch, n - lo)
        e = torch.zeros(k, n, dtype=torch.float64, device=device)
        e[torch.arange(k), lo + torch.arange(k)] = 1.0
        col = op2d.normal(e.view(k, h, w))
        if col.is_complex():
            raise InputDataError(
                f"{who}: the slice operator's image domain is complex; build it with real_input=True"
            )
        G[lo : lo + k] = col.reshape(k, n).to(torch.float64)
    G = 0.5 * (G + G.T)
    lam, V = torch.linalg.eigh(G)
    return lam, V


@dataclasses.dataclass
class _Spectral:
    """Per-solve spectral quantities (rebuilt by ``init_state``; not saved)."""

    svd: SliceSVD
    s: Tensor  # (H, W) in the solve dtype, 0 = unobserved
    observed: Tensor  # (H, W) bool
    ybar: Tensor  # (S, H, W): ȳ/s on observed coordinates, 0 elsewhere
    levels: Tensor  # (steps,) float64 noise levels σ_i in data units


@dataclasses.dataclass
class DDRMState(SolverState):
    """DDRM loop state.

    Attributes:
        u: the data-unit iterate :math:`x_0 + \\sigma_i\\varepsilon` of the current level, ``(S, H, W)``.
        admm: the z-TV proximal ADMM state (``mode="3d"``), else ``None``.
        spec: per-solve spectral quantities (not saved; rebuilt on resume).
    """

    u: Tensor
    admm: ProximalADMMTV | None
    spec: _Spectral


class DDRM(DiffusionSolver[DDRMState]):
    """DDRM on diffrecon's solver skeleton, one slice SVD for all slices (see the module docstring).

    Args:
        prior (Prior): a 2-D pixel-space :class:`~diffrecon.priors.prior.DiffusionPrior` (VP as in the paper).
        steps: sampler steps = NFE (paper: 20).
        eta: η ∈ [0, 1] (paper: 0.85).
        eta_b: η_b ∈ [0, 1] (paper: 1).
        sigma_y: noise standard deviation of the measurements (prior data units, like DiffPIR's σ_n).
        convention: ``"paper"`` or ``"deepinv"`` (module docstring).
        sigma_max: the first level of the ``"deepinv"`` convention (data units; deepinv: 1).
        sv_rcond: relative cut-off of the singular values (see :func:`slice_svd`).
        max_svd_pixels: largest slice H·W for a dense SVD.
        clip_x0: clamp Tweedie's estimate to the prior's data range (neither reference does).
        mode: ``"2d"`` (the paper) or ``"3d"`` (z-TV proximal step before each update).
        tv_lam: λ_TV of the 3-D proximal step (image units; untuned default).
        tv_rho: its ADMM penalty μ.
        tv_axes: TV axes (``("z",)``; ``"all"`` or any of ``"z","y","x"``).
        boundary: ``"periodic"`` or ``"neumann"``.
        cg_iter: CG steps of the 3-D x-update
            :math:`(I + \\mu D_z^\\top D_z)x = \\hat x_0 + \\mu D_z^\\top(d-u)`.
        seed: seed of the solver's generator.
        chunk_size: slices per network call (bounds memory).
        image_scale: image value corresponding to the top of the prior's data range.
        progress: show a tqdm progress bar.
        on_step: ``on_step(i, x, info)`` after each step; see
            :class:`~diffrecon.recon.diffusion.DiffusionSolver`.

    Presets: :meth:`paper` and :meth:`deepinv`.

    Example (inpainting of four 64² slices with the bundled prior)::

        >>> from diffrecon.datasets import sample_volume
        >>> from diffrecon.operators import Mask, SliceWise
        >>> from diffrecon.priors import load
        >>> vol = sample_volume()[0][:, :, 30:34].permute(2, 0, 1).contiguous()
        >>> mask = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < 0.5
        >>> A = SliceWise(Mask(mask))
        >>> x, record = DDRM.paper(load("head-64"), steps=5, progress=False)(A(vol), A)
        >>> x.shape, record.method, record.nfe
        (torch.Size([4, 64, 64]), 'ddrm', 5)
    """

    method = "ddrm"

    def __init__(
        self,
        prior,
        steps: int = 20,
        *,
        eta: float = 0.85,
        eta_b: float = 1.0,
        sigma_y: float = 0.0,
        convention: str = "paper",
        sigma_max: float = 1.0,
        sv_rcond: float = 1e-5,
        max_svd_pixels: int = 4096,
        clip_x0: bool = False,
        mode: str = "2d",
        tv_lam: float = 0.01,
        tv_rho: float = 1.0,
        tv_axes: Sequence[str | int] | str = ("z",),
        boundary: str = "periodic",
        cg_iter: int = 5,
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
                "DDRM: expected a pixel-space DiffusionPrior (the SVD acts on images); found a latent prior"
            )
        for name, v in (("eta", eta), ("eta_b", eta_b)):
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise InputDataError(f"DDRM: expected 0 <= {name} <= 1, found {v!r}")
        if not (isinstance(sigma_y, (int, float)) and math.isfinite(sigma_y) and sigma_y >= 0):
            raise InputDataError(f"DDRM: expected sigma_y >= 0 (finite), found {sigma_y!r}")
        if convention not in CONVENTIONS:
            raise InputDataError(f"DDRM: convention must be one of {CONVENTIONS}, found {convention!r}")
        if mode not in MODES:
            raise InputDataError(f"DDRM: mode must be one of {MODES}, found {mode!r}")
        if not (math.isfinite(sigma_max) and sigma_max > 0):
            raise InputDataError(f"DDRM: expected sigma_max > 0, found {sigma_max}")
        if not (math.isfinite(sv_rcond) and 0 <= sv_rcond < 1):
            raise InputDataError(f"DDRM: expected 0 <= sv_rcond < 1, found {sv_rcond}")
        if convention == "paper" and self.steps > prior.schedule.num_steps and prior.schedule.discrete:
            raise InputDataError(
                f"DDRM: {self.steps} steps requested but the schedule has only {prior.schedule.num_steps}"
            )
        if mode == "3d":
            ADMMTV.check_settings(tv_lam, tv_rho, cg_iter, boundary)
        self.eta, self.eta_b, self.sigma_y = float(eta), float(eta_b), float(sigma_y)
        self.convention, self.sigma_max, self.sv_rcond = convention, float(sigma_max), float(sv_rcond)
        self.max_svd_pixels, self.clip_x0, self.mode = int(max_svd_pixels), bool(clip_x0), mode
        self.tv_lam, self.tv_rho, self.tv_axes = float(tv_lam), float(tv_rho), resolve_axes(tv_axes)
        self.boundary, self.cg_iter = boundary, int(cg_iter)

    # -- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls, prior, **kw):
        """The paper's settings: 20 steps on the strided DDPM grid, η = 0.85, η_b = 1 (pass ``sigma_y``)."""
        params = dict(steps=20, eta=0.85, eta_b=1.0, convention="paper")
        params.update(kw)
        return cls(prior, **params)

    @classmethod
    def deepinv(cls, prior, **kw):
        """deepinv 0.5.0's ``DDRM`` defaults: levels ``linspace(1, 0, 100)``, η = 0.85, η_b = 1, σ_y = 0.01
        (its value for a physics without a Gaussian noise level; pass the real one) and its conventions."""
        params = dict(steps=100, eta=0.85, eta_b=1.0, sigma_y=0.01, convention="deepinv", sigma_max=1.0)
        params.update(kw)
        return cls(prior, **params)

    def settings(self) -> dict:
        s = super().settings()
        s.update(eta=self.eta, eta_b=self.eta_b, sigma_y=self.sigma_y, convention=self.convention,
                 sv_rcond=self.sv_rcond, clip_x0=self.clip_x0, mode=self.mode)
        if self.convention == "deepinv":
            s.update(sigma_max=self.sigma_max)
        if self.mode == "3d":
            s.update(tv_lam=self.tv_lam, tv_rho=self.tv_rho, tv_axes=list(self.tv_axes),
                     boundary=self.boundary, cg_iter=self.cg_iter)
        return s

    # -- grid -------------------------------------------------------------------------------------
    @property
    def _scale(self) -> float:
        return abs(float(getattr(self.prior, "data_scale", 1.0)))

    @property
    def noise_scale(self) -> float:
        """Factor on every Gaussian draw: 1 (paper) or 1/√2 (deepinv 0.5.0)."""
        return 1.0 if self.convention == "paper" else 1.0 / math.sqrt(2.0)

    def levels(self) -> tuple[Tensor, Tensor]:
        """``(t_i, σ_i)``: network times and data-unit noise levels of the steps (module docstring)."""
        sched = self.prior.schedule
        if self.convention == "paper":
            t = sched.ddim_timesteps(self.steps)
            return t, sched.noise_to_signal(t).to(torch.float64) / self._scale
        sig = torch.linspace(self.sigma_max, 0.0, self.steps, dtype=torch.float64)
        ts = [sched.t_from_noise_to_signal(float(v) * self._scale) for v in sig]
        t = torch.tensor(ts, dtype=torch.long if sched.discrete else torch.float64)
        return t, sig

    # -- hooks ----------------------------------------------------------------------------------
    def timesteps(self) -> Tensor:
        return self.levels()[0]

    def init_state(self, ctx: SolveContext) -> DDRMState:
        if ctx.op2d is None:
            raise InputDataError("DDRM: expected a SliceWise operator (one per-slice SVD for every slice)")
        svd = slice_svd(ctx.op2d, rcond=self.sv_rcond, max_pixels=self.max_svd_pixels, who="DDRM")
        ref = ctx.aty
        s = svd.singular_values(ref)
        observed = s > (self.sigma_y if self.convention == "deepinv" else 0.0)
        s = torch.where(observed, s, torch.zeros_like(s))
        ybar = torch.where(observed, svd.y_over_s(ref), torch.zeros_like(ref))
        levels = self.levels()[1]
        spec = _Spectral(svd, s, observed, ybar, levels)
        admm = None
        if self.mode == "3d":
            admm = ProximalADMMTV(ctx.y, ctx.op, self.tv_lam, self.tv_rho, self.tv_axes, self.boundary,
                                  self.cg_iter, comm=ctx.comm, data=False)
        sig_T, sy = float(levels[0]), self.sigma_y
        s_safe = torch.where(observed, s, torch.ones_like(s))
        if self.convention == "paper":
            large = observed & (s * sig_T > sy)
            zero = float(self.prior.decode(torch.zeros(())))  # the model-space zero in data units
            rest = svd.vt(torch.full_like(ref, zero))
        else:
            large = observed
            rest = torch.zeros_like(ref)
        std = torch.where(large, (sig_T**2 - (sy / s_safe) ** 2).clamp_min(0).sqrt(),
                          torch.full_like(s, sig_T))
        xi = self.randn(ctx).squeeze(1) * self.noise_scale
        u = svd.v(torch.where(large, ybar, rest) + std * xi)
        return DDRMState(x0=torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device), u=u, admm=admm,
                         spec=spec)

    def spectral_update(self, u: Tensor, x0: Tensor, sigma: float, sigma_next: float, xi: Tensor,
                        spec: _Spectral) -> Tensor:
        """DDRM's per-coordinate rule (module docstring) from level σ to σ′ > 0; ``xi`` ~ N(0, I)
        ``(S, H, W)`` already scaled by :attr:`noise_scale`. Returns :math:`u_{t'} = Vv`."""
        svd, s, obs, sy = spec.svd, spec.s, spec.observed, self.sigma_y
        c = math.sqrt(max(0.0, 1.0 - self.eta**2))
        v0 = svd.vt(x0)
        e = svd.vt((u - x0) / sigma)
        s_safe = torch.where(obs, s, torch.ones_like(s))
        after = obs & (s * sigma_next < sy)
        before = obs & ~after
        null = v0 + (c * sigma_next) * e + (self.eta * sigma_next) * xi
        v_after = (v0 + (c * sigma_next) * (spec.ybar - v0) * (s_safe / max(sy, 1e-300))
                   + (self.eta * sigma_next) * xi)
        spread = (sigma_next**2 - (self.eta_b * sy / s_safe) ** 2).clamp_min(0).sqrt()
        v_before = self.eta_b * spec.ybar + (1.0 - self.eta_b) * v0 + spread * xi
        v = torch.where(before, v_before, torch.where(after, v_after, null))
        return svd.v(v)

    def step(self, i: int, state: DDRMState, ctx: SolveContext) -> DDRMState:
        t, _ = self.time_pair(i, ctx)
        spec = state.spec
        a, _ = self.alpha_sigma(t)
        z0, _, _ = self.predict(a * self.to_model(state.u), t, ctx)
        if self.clip_x0:
            z0 = z0.clamp(*self.model_range())
        x0 = self.to_image(z0)
        if state.admm is not None:
            x0 = state.admm.prox_step(x0, x0, 1.0)
        if i + 1 == len(ctx.timesteps):
            return dataclasses.replace(state, x0=x0)
        sigma, sigma_next = float(spec.levels[i]), float(spec.levels[i + 1])
        xi = self.randn(ctx).squeeze(1) * self.noise_scale
        u = self.spectral_update(state.u, x0, sigma, sigma_next, xi, spec)
        return dataclasses.replace(state, x0=x0, u=u)
