r"""Noise schedules: how clean data ``x0`` and Gaussian noise ``ε ~ N(0, I)`` mix at time ``t``.

Every schedule here is written in one form,

.. math::  x_t = a_t\,x_0 + s_t\,\varepsilon ,

with a signal scale :math:`a_t` and a noise scale :math:`s_t` (both scalars per time):

* **VP** (variance preserving, DDPM/DDIM/DDS): :math:`a_t = \sqrt{\bar\alpha_t}`,
  :math:`s_t = \sqrt{1-\bar\alpha_t}`, :math:`\bar\alpha_t = \prod_{i\le t}(1-\beta_i)`.
  :class:`VPSchedule` is *discrete* (``T`` steps, integer ``t`` in ``[0, T)``, any β sequence:
  linear, scaled-linear, cosine, or given ``alphas_cumprod``); :class:`VPContinuousSchedule` is the
  continuous-time VP-SDE (:math:`t\in[0,1]`, :math:`\beta(t)=\beta_{min}+t(\beta_{max}-\beta_{min})`,
  :math:`\bar\alpha(t) = \exp(-\tfrac12 t^2(\beta_{max}-\beta_{min}) - t\beta_{min})`).
* **VE** (variance exploding, score-SDE/NCSN++, DiffusionMBIR): :math:`a_t = 1`,
  :math:`s_t = \sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`, :math:`t\in[0,1]`
  (:class:`VESchedule`; its discrete grid is the geometric sequence of ``N`` sigmas).

Times are tensors broadcast against a batch: ``t`` of shape () or (B,). Discrete VP accepts float
``t`` too (linear interpolation of :math:`\bar\alpha` between neighbouring integers), which the
continuous-time samplers need.
"""

from __future__ import annotations

import math

import torch


def _as_t(t, device=None) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64, device=device)


class Schedule:
    """Base class. Subclasses define :meth:`alpha_sigma`; everything else derives from it."""

    kind: str = "base"
    discrete: bool = False
    num_steps: int = 1000

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(a_t, s_t)`` as float64 tensors with the shape of ``t``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ derived quantities
    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio :math:`a_t^2/s_t^2`."""
        a, s = self.alpha_sigma(t)
        return a**2 / s**2

    def noise_to_signal(self, t) -> torch.Tensor:
        r""":math:`s_t/a_t`: the std of the noise on the rescaled image :math:`x_t/a_t`."""
        a, s = self.alpha_sigma(t)
        return s / a

    def t_from_noise_to_signal(self, ratio: float):
        """Time at which ``s_t/a_t == ratio`` (nearest integer step for discrete schedules)."""
        if self.discrete:
            r = self.noise_to_signal(torch.arange(self.num_steps))
            return int(torch.argmin((r - ratio).abs()))
        lo, hi = 0.0, 1.0
        for _ in range(60):  # bisection; s/a is increasing in t
            mid = (lo + hi) / 2
            if float(self.noise_to_signal(mid)) < ratio:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def sample_t(
        self, batch: int, generator: torch.Generator | None = None, device=None, t_min: float = 1e-5
    ) -> torch.Tensor:
        """Training times: uniform integers in ``[0, T)`` (discrete) or uniform in ``[t_min, 1]``."""
        if self.discrete:
            return torch.randint(0, self.num_steps, (batch,), generator=generator, device=device)
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        return (t_min + (1 - t_min) * u).to(torch.float32)

    def ddim_coefficients(
        self, t, t_prev, eta: float = 0.0, mixing: str = "ddim"
    ) -> tuple[float, float, float]:
        r"""Coefficients ``(a', c_eps, c_noise)`` of one DDIM-type update from ``t`` to ``t_prev``,

        .. math:: x_{t'} = a_{t'}\hat z_0 + c_\varepsilon\,\hat\varepsilon + c_\xi\,\xi ,
                  \qquad \xi\sim\mathcal N(0, I),

        as Python floats (float64 arithmetic) for scalar times:

        * ``mixing="ddim"`` (Song et al.'s DDIM-η): :math:`c_\xi = \eta\,(s_{t'}/s_t)\sqrt{1-a_t^2/a_{t'}^2}`,
          :math:`c_\varepsilon = \sqrt{s_{t'}^2 - c_\xi^2}` (η = 0 deterministic, η = 1 DDPM-like);
        * ``mixing="dds"`` (the DDS code's mixing): :math:`c_\xi = \eta\,s_{t'}`,
          :math:`c_\varepsilon = s_{t'}\sqrt{1-\eta^2}`.

        ``t_prev=None`` is the end of the chain (:math:`a = 1, s = 0`): the update returns
        :math:`\hat z_0`.
        """
        if mixing not in ("ddim", "dds"):
            raise ValueError(f"mixing must be 'ddim' or 'dds', got {mixing!r}")
        if t_prev is None:
            return 1.0, 0.0, 0.0
        a, s = (float(v) for v in self.alpha_sigma(_as_t(t)))
        a2, s2 = (float(v) for v in self.alpha_sigma(_as_t(t_prev)))
        if mixing == "dds":
            return a2, s2 * math.sqrt(max(0.0, 1.0 - eta**2)), s2 * eta
        c_noise = eta * (s2 / s) * math.sqrt(max(0.0, 1.0 - (a * a) / (a2 * a2)))
        return a2, math.sqrt(max(0.0, s2 * s2 - c_noise * c_noise)), c_noise

    # ------------------------------------------------------------------ timestep grids
    def ddpm_timesteps(self) -> torch.Tensor:
        """Every discrete step, descending: ``T-1, …, 0`` (discrete schedules only)."""
        self._need_discrete("DDPM")
        return torch.arange(self.num_steps - 1, -1, -1)

    def ddim_timesteps(self, n: int) -> torch.Tensor:
        """``n`` evenly strided steps, descending, as DDIM/DDS use: ``skip = T // n`` and
        ``(n-1)·skip, …, skip, 0`` (T=1000, n=50 → 980, 960, …, 0). For continuous schedules:
        ``n`` times ``linspace(1, 1e-3, n)``."""
        if n < 1:
            raise ValueError(f"number of steps must be ≥ 1, got {n}")
        if not self.discrete:
            return torch.linspace(1.0, 1e-3, n)
        if n > self.num_steps:
            raise ValueError(f"{n} steps requested but the schedule has only {self.num_steps}")
        skip = self.num_steps // n
        return torch.arange(0, n * skip, skip).flip(0)

    def pc_timesteps(self, n: int | None = None, eps: float = 1e-5) -> torch.Tensor:
        """Predictor–corrector grid (score-SDE): ``linspace(1, eps, n)`` continuous times; for a
        discrete schedule the integer steps ``T-1 … 0`` (or ``n`` of them, evenly spaced)."""
        n = n or self.num_steps
        if self.discrete:
            return torch.linspace(self.num_steps - 1, 0, n).round().long()
        return torch.linspace(1.0, eps, n)

    def _need_discrete(self, what: str) -> None:
        if not self.discrete:
            raise ValueError(
                f"{what} timesteps need a discrete schedule; {type(self).__name__} is continuous"
            )

    def to_config(self) -> dict:
        raise NotImplementedError


class VPSchedule(Schedule):
    """Discrete variance-preserving schedule defined by ``betas`` (T,) or ``alphas_cumprod`` (T,).

    Example::

        sched = VPSchedule.linear(1000, 1e-4, 0.02)   # DDPM / DDS
        a, s = sched.alpha_sigma(torch.tensor([0, 500, 999]))
    """

    kind = "vp"
    discrete = True

    def __init__(
        self, betas=None, alphas_cumprod=None, beta_schedule: str = "custom", params: dict | None = None
    ):
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("give exactly one of betas or alphas_cumprod")
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64)
            if betas.ndim != 1 or (betas <= 0).any() or (betas >= 1).any():
                raise ValueError("betas must be a 1-D sequence in (0, 1)")
            alphas_cumprod = torch.cumprod(1 - betas, 0)
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if ac.ndim != 1 or (ac <= 0).any() or (ac >= 1).any() or (ac[1:] > ac[:-1] + 1e-12).any():
            raise ValueError("alphas_cumprod must be a decreasing 1-D sequence in (0, 1)")
        self.alphas_cumprod = ac
        self.num_steps = int(ac.numel())
        self.beta_schedule = beta_schedule
        self.params = dict(params or {})

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> VPSchedule:
        """β linear from ``beta_start`` to ``beta_end`` (DDPM, DDS, ADM)."""
        return cls(
            betas=torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64),
            beta_schedule="linear",
            params={"num_steps": num_steps, "beta_start": beta_start, "beta_end": beta_end},
        )

    @classmethod
    def scaled_linear(
        cls, num_steps: int = 1000, beta_start: float = 8.5e-4, beta_end: float = 0.012
    ) -> VPSchedule:
        """√β linear (Stable Diffusion's latent schedule)."""
        b = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
        return cls(
            betas=b,
            beta_schedule="scaled_linear",
            params={"num_steps": num_steps, "beta_start": beta_start, "beta_end": beta_end},
        )

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> VPSchedule:
        r"""Nichol & Dhariwal cosine: :math:`\bar\alpha(t)=\cos^2(\frac{t/T+s}{1+s}\frac\pi2)/\bar\alpha(0)`,
        β clipped at ``max_beta``."""
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        b = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
        return cls(
            betas=torch.tensor(b, dtype=torch.float64),
            beta_schedule="cosine",
            params={"num_steps": num_steps, "s": s, "max_beta": max_beta},
        )

    @property
    def betas(self) -> torch.Tensor:
        ac = self.alphas_cumprod
        return 1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])

    def _table(self, device) -> torch.Tensor:
        """``alphas_cumprod`` on ``device`` (cached, so GPU samplers never copy it per step)."""
        tables = self.__dict__.setdefault("_tables", {})
        key = str(device)
        if key not in tables:
            tables[key] = self.alphas_cumprod.to(device)
        return tables[key]

    def alpha_bar(self, t) -> torch.Tensor:
        r""":math:`\bar\alpha_t` for integer (or fractional, interpolated) ``t`` on ``t``'s device."""
        t = _as_t(t)
        ac = self._table(t.device)
        if not torch.is_floating_point(t) or torch.all(t == t.round()):
            idx = t.long()
            if (idx < 0).any() or (idx >= self.num_steps).any():
                raise ValueError(f"timestep outside [0, {self.num_steps}): {t}")
            return ac[idx]
        tc = t.clamp(0, self.num_steps - 1)
        lo = tc.floor().long()
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = tc - lo
        return (1 - w) * ac[lo] + w * ac[hi]

    def alpha_sigma(self, t):
        ab = self.alpha_bar(t)
        return ab.sqrt(), (1 - ab).sqrt()

    def to_config(self) -> dict:
        cfg = {"type": "vp", "beta_schedule": self.beta_schedule, **self.params}
        if self.beta_schedule == "custom":
            cfg["alphas_cumprod"] = self.alphas_cumprod.tolist()
        return cfg


class VPContinuousSchedule(Schedule):
    r"""Continuous-time VP-SDE (score-SDE): :math:`t\in[0,1]`, β(t) linear from β_min to β_max
    (defaults 0.1, 20 = the discrete linear schedule with T=1000 in the limit)."""

    kind = "vp"
    discrete = False

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, num_steps: int = 1000):
        self.beta_min, self.beta_max, self.num_steps = float(beta_min), float(beta_max), int(num_steps)

    def alpha_sigma(self, t):
        t = _as_t(t)
        log_ab = -0.5 * t**2 * (self.beta_max - self.beta_min) - t * self.beta_min
        ab = torch.exp(log_ab)
        return ab.sqrt(), (-torch.expm1(log_ab)).clamp_min(1e-20).sqrt()

    def to_config(self) -> dict:
        return {
            "type": "vp_continuous",
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "num_steps": self.num_steps,
        }


class VESchedule(Schedule):
    r"""Variance exploding: :math:`a_t=1`, :math:`s_t=\sigma(t)=\sigma_{min}(\sigma_{max}/\sigma_{min})^t`.

    ``discrete=True`` makes integer ``t`` in ``[0, N)`` index the geometric grid of ``num_steps``
    sigmas (``σ_0 = σ_min``, ``σ_{N-1} = σ_max``); the default is continuous :math:`t\in[0,1]`
    (DiffusionMBIR: σ_min = 0.01, σ_max = 378, N = 2000).
    """

    kind = "ve"

    def __init__(
        self, sigma_min: float = 0.01, sigma_max: float = 50.0, num_steps: int = 1000, discrete: bool = False
    ):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.num_steps, self.discrete = int(num_steps), bool(discrete)

    @property
    def sigmas(self) -> torch.Tensor:
        """The discrete geometric grid (N,), increasing from σ_min to σ_max."""
        return self.sigma(torch.linspace(0, 1, self.num_steps, dtype=torch.float64), continuous=True)

    def sigma(self, t, continuous: bool | None = None) -> torch.Tensor:
        t = _as_t(t)
        if self.discrete if continuous is None else not continuous:
            t = t / max(self.num_steps - 1, 1)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def alpha_sigma(self, t):
        s = self.sigma(t)
        return torch.ones_like(s), s

    def to_config(self) -> dict:
        return {
            "type": "ve",
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "num_steps": self.num_steps,
            "discrete": self.discrete,
        }


def schedule_from_config(cfg: dict) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_config` output."""
    cfg = dict(cfg)
    typ = cfg.pop("type", None)
    if typ == "vp":
        bs = cfg.pop("beta_schedule", "linear")
        if bs == "custom":
            return VPSchedule(alphas_cumprod=cfg["alphas_cumprod"])
        maker = {
            "linear": VPSchedule.linear,
            "cosine": VPSchedule.cosine,
            "scaled_linear": VPSchedule.scaled_linear,
        }
        if bs not in maker:
            raise ValueError(f"unknown beta_schedule {bs!r}; expected one of {sorted(maker)} or 'custom'")
        return maker[bs](**cfg)
    if typ == "vp_continuous":
        return VPContinuousSchedule(**cfg)
    if typ == "ve":
        return VESchedule(**cfg)
    raise ValueError(f"unknown schedule type {typ!r}; expected 'vp', 'vp_continuous' or 've'")
