r"""``DiffusionPrior`` (network + schedule + parameterisation) and ``LatentPrior``.

A prior works in **model space**: images in their data range (e.g. [0, 1]) are mapped by
``z = data_scale · x + data_shift`` (e.g. to [-1, 1]) before noising, and back by :meth:`denormalise`.
With :math:`x_t = a_t z_0 + s_t \varepsilon` (see :mod:`diffrecon.priors.schedule`) the network output
``out = net(x_t, c(t))`` is read according to ``parameterisation``:

* ``"eps"``: predicts :math:`\varepsilon`; :math:`\hat z_0 = (x_t - s_t\hat\varepsilon)/a_t`.
* ``"x0"``: predicts :math:`z_0`; :math:`\hat\varepsilon = (x_t - a_t\hat z_0)/s_t`.
* ``"v"``: predicts :math:`v = a_t\varepsilon - s_t z_0`;
  :math:`\hat z_0 = (a_t x_t - s_t\hat v)/(a_t^2+s_t^2)`,
  :math:`\hat\varepsilon = (s_t x_t + a_t\hat v)/(a_t^2+s_t^2)`.
* ``"score"``: predicts :math:`\nabla\log p_t(x_t)`; :math:`\hat\varepsilon = -s_t\,\hat\nabla`.

and always :math:`\nabla_{x_t}\log p_t = -\hat\varepsilon/s_t` and Tweedie's formula
:math:`\mathbb E[z_0\mid x_t] = (x_t + s_t^2\nabla\log p_t)/a_t` (= :meth:`x0`).

The network's time input ``c(t)`` is chosen by ``time_input``: ``"index"`` (the step index itself,
discrete schedules), ``"t1000"`` (continuous t × 1000), ``"sigma"`` or ``"log_sigma"``
(the noise scale :math:`s_t`, as NCSN++ takes it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputDataError
from .schedule import Schedule

PARAMETERISATIONS = ("eps", "x0", "v", "score")
TIME_INPUTS = ("index", "t1000", "sigma", "log_sigma")


class DiffusionPrior(nn.Module):
    """A denoising network with its noise schedule and output parameterisation.

    Args:
        network: module called as ``network(x, c)`` with ``x`` (B, C, H, W) and ``c`` (B,) float.
        schedule: a :class:`~diffrecon.priors.schedule.Schedule`.
        parameterisation: one of ``"eps"``, ``"x0"``, ``"v"``, ``"score"``.
        time_input: how times are fed to the network (see module docstring).
        data_scale: scale of the image→model-space map ``z = data_scale·x + data_shift``.
        data_shift: shift of that map.
        image_shape: (C, H, W) the network was trained on (checked by samplers/solvers).
        config: free-form metadata (architecture, training data, …) kept with the checkpoint.

    Example::

        prior = diffrecon.priors.load("head-64")
        z0 = prior.normalise(x)                    # x: (B, 1, 64, 64) in [0, 1]
        t = torch.full((B,), 100)
        xt = prior.add_noise(z0, torch.randn_like(z0), t)
        x_hat = prior.denormalise(prior.x0(xt, t))  # Tweedie estimate, image units
    """

    def __init__(
        self,
        network: nn.Module,
        schedule: Schedule,
        parameterisation: str = "eps",
        time_input: str = "index",
        data_scale: float = 2.0,
        data_shift: float = -1.0,
        image_shape: tuple[int, ...] | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
        if time_input == "index" and not schedule.discrete:
            raise ValueError("time_input='index' needs a discrete schedule")
        self.network = network
        self.schedule = schedule
        self.parameterisation = parameterisation
        self.time_input = time_input
        self.data_scale = float(data_scale)
        self.data_shift = float(data_shift)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.config = dict(config or {})
        self.nfe = 0  # network evaluations since construction (or last reset)
        self.channels_last = False

    def use_channels_last(self) -> DiffusionPrior:
        """Store the 2-D network's weights channels-last and feed it channels-last inputs.

        On CPUs, oneDNN's channels-last convolutions run the bundled UNet ≈ 30 % faster than the
        default layout (64 slices of 64², 2 cores); results agree to float rounding (≈ 1e-6). Saved
        checkpoints and weight fingerprints are layout-independent (contiguous copies). Returns self.
        """
        self.network.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    # ---------------------------------------------------------------- data space <-> model space
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Image (data range) → model space."""
        return x * self.data_scale + self.data_shift

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        """Model space → image (data range)."""
        return (z - self.data_shift) / self.data_scale

    # the Prior interface (diffrecon.priors.interface): for a pixel prior the "encoder" is the affine map
    is_latent = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (data units) → model space: :meth:`normalise` (the :class:`~.interface.Prior` interface)."""
        return self.normalise(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space → images (data units): :meth:`denormalise`."""
        return self.denormalise(z)

    @property
    def state_shape(self) -> tuple[int, ...] | None:
        """Shape ``(C, H, W)`` of one diffusion state ``x_t``: the image shape for a pixel prior."""
        return self.image_shape

    @property
    def data_range(self) -> tuple[float, float]:
        """The image range the prior was trained on (``config["data_range"]``, default ``(0, 1)``)."""
        lo, hi = self.config.get("data_range", (0.0, 1.0))
        return float(lo), float(hi)

    # ---------------------------------------------------------------- schedule helpers
    def _coef(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        a, s = self.schedule.alpha_sigma(t)  # computed on x's device in float64
        view = (-1,) + (1,) * (x.ndim - 1)
        return t, a.to(x.device, x.dtype).view(view), s.to(x.device, x.dtype).view(view)

    def alpha_sigma(self, t, x: torch.Tensor):
        """``(a_t, s_t)`` shaped to broadcast against ``x`` (B, …)."""
        _, a, s = self._coef(t, x)
        return a, s

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Forward process :math:`x_t = a_t z_0 + s_t\\varepsilon` (model space)."""
        _, a, s = self._coef(t, z0)
        return a * z0 + s * noise

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """What the network should output for this parameterisation (training target)."""
        _, a, s = self._coef(t, z0)
        if self.parameterisation == "eps":
            return noise
        if self.parameterisation == "x0":
            return z0
        if self.parameterisation == "v":
            return a * noise - s * z0
        return -noise / s

    def time_condition(self, t, x: torch.Tensor) -> torch.Tensor:
        """The (B,) float tensor passed to the network for times ``t``."""
        t, a, s = self._coef(t, x)
        dt = x.dtype if torch.is_floating_point(x) else torch.float32
        if self.time_input == "index":
            return t.to(dt)
        if self.time_input == "t1000":
            return t.to(dt) * 1000.0
        sig = (s / a).flatten().to(dt)
        return sig if self.time_input == "sigma" else torch.log(sig)

    # ---------------------------------------------------------------- network + conversions
    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Raw network output for ``x_t`` (B, C, H, W) at times ``t``."""
        self.nfe += 1
        if self.channels_last and x_t.dim() == 4:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return self.network(x_t, self.time_condition(t, x_t))

    def predict(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """One network call → ``(z0_hat, eps_hat)``, both (B, C, H, W) in model space."""
        _, a, s = self._coef(t, x_t)
        return convert(self.parameterisation, self(x_t, t), x_t, a, s)

    def x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Tweedie estimate :math:`\\mathbb E[z_0\\mid x_t]` (model space)."""
        return self.predict(x_t, t)[0]

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Noise estimate :math:`\\hat\\varepsilon`."""
        return self.predict(x_t, t)[1]

    def score(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Score :math:`\\nabla_{x_t}\\log p_t(x_t) = -\\hat\\varepsilon/s_t`."""
        _, a, s = self._coef(t, x_t)
        return -self.eps(x_t, t) / s

    # ---------------------------------------------------------------- conveniences
    def denoise(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """MMSE-denoise an image ``y = x + σ·n`` given in data units (any shape (B, C, H, W)).

        Picks the step whose noise-to-signal ratio equals ``σ·data_scale``, forms
        :math:`x_t = a_t\\,\\mathrm{normalise}(y)` and returns the denormalised Tweedie estimate.
        Raises :class:`~diffrecon.errors.InputDataError` unless σ is finite and > 0.
        """
        try:
            sigma = float(sigma)
        except (TypeError, ValueError, RuntimeError):
            raise InputDataError(f"denoise: sigma must be one number (data units), found {sigma!r}") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise InputDataError(f"denoise: sigma must be finite and > 0 (data units), found {sigma}")
        t = self.schedule.t_from_noise_to_signal(sigma * abs(self.data_scale))
        tt = torch.full((y.shape[0],), t, device=y.device)
        a, _ = self.alpha_sigma(tt, y)
        return self.denormalise(self.x0(a * self.normalise(y), tt))

    def ddim_step(
        self,
        z0_hat: torch.Tensor,
        eps_hat: torch.Tensor,
        t,
        t_prev,
        eta: float = 0.0,
        noise=None,
        mixing: str = "ddim",
    ) -> torch.Tensor:
        r"""One DDIM update from ``t`` to ``t_prev`` given the (possibly corrected) estimates (model space).

        :math:`x_{t'} = a_{t'}\hat z_0 + c_\varepsilon\hat\varepsilon + c_\xi\,\xi` with the coefficients of
        :meth:`~diffrecon.priors.schedule.Schedule.ddim_coefficients` (``mixing`` ``"ddim"``: DDIM-η;
        ``"dds"``: the DDS code's mixing). ``t``, ``t_prev`` are scalar times; ``t_prev=None`` (or a
        negative discrete step) ends the chain and returns ``z0_hat``. ``noise`` is the ξ tensor, or a
        zero-argument function drawing it (called only when :math:`c_\xi > 0`, so deterministic steps
        consume no random numbers); it is required when the step is stochastic.

        Every sampler in diffrecon (DDS, DPS, the latent solvers, unconditional sampling) takes its
        DDIM steps here.
        """
        if t_prev is not None and self.schedule.discrete and float(t_prev) < 0:
            t_prev = None
        a2, c_eps, c_noise = self.schedule.ddim_coefficients(t, t_prev, eta, mixing)
        out = a2 * z0_hat + c_eps * eps_hat if t_prev is not None else z0_hat
        if c_noise > 0:
            if noise is None:
                raise ValueError("ddim_step: a stochastic step (eta > 0) needs noise")
            out = out + c_noise * (noise() if callable(noise) else noise)
        return out

    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        device=None,
        progress: bool = False,
        clip_x0: bool = True,
    ) -> torch.Tensor:
        """Unconditional DDIM samples (n, C, H, W) in data units (VP schedules); with ``clip_x0`` ẑ0 is
        clamped to the data range at every step (images; latents are not clipped)."""
        if self.image_shape is None:
            raise ValueError("image_shape is unknown; set prior.image_shape = (C, H, W)")
        device = device or next(self.parameters()).device
        x = torch.randn((n, *self.image_shape), generator=generator, device=device)
        ts = self.schedule.ddim_timesteps(steps).tolist()
        lo, hi = sorted(float(self.normalise(torch.tensor(float(v)))) for v in self.data_range)
        it = ts
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(ts, desc="ddim")
        for i, t in enumerate(it):
            z0, e = self.predict(x, torch.full((n,), t, device=device))
            if clip_x0:
                z0 = z0.clamp(lo, hi)
            t_prev = ts[i + 1] if i + 1 < len(ts) else None
            x = self.ddim_step(
                z0, e, t, t_prev, eta,
                noise=lambda shape=x.shape: torch.randn(shape, generator=generator, device=device),
            )
        return self.denormalise(x)


def convert(
    parameterisation: str, out: torch.Tensor, x_t: torch.Tensor, a, s
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network output into ``(z0_hat, eps_hat)`` (see the module table)."""
    if parameterisation == "eps":
        return (x_t - s * out) / a, out
    if parameterisation == "x0":
        return out, (x_t - a * out) / s
    if parameterisation == "v":
        n = a * a + s * s
        return (a * x_t - s * out) / n, (s * x_t + a * out) / n
    if parameterisation == "score":
        eps = -s * out
        return (x_t - s * eps) / a, eps
    raise ValueError(f"unknown parameterisation {parameterisation!r}")


class LatentPrior(nn.Module):
    r"""An autoencoder plus a :class:`DiffusionPrior` acting on its (scaled) latents.

    ``encode(x)`` maps images (data units) to latents ``z = scale_factor · E(normalise(x))`` on which
    ``diffusion`` is trained; ``decode(z)`` inverts it. The autoencoder must provide
    ``encode(x) -> latent`` (a tensor, or a (mean, logvar)-like tuple whose first entry is used) and
    ``decode(latent) -> image``.

    It implements the :class:`~diffrecon.priors.interface.Prior` interface, so every solver of the
    shared skeleton runs on it: the model space is the latent space (the latent diffusion prior's own
    normalisation is the identity), :meth:`predict`, :meth:`ddim_step` and :attr:`schedule` are the
    latent diffusion's, :attr:`state_shape` is the latent shape ``(c, h, w)`` and :attr:`image_shape`
    the decoded image's ``(C, H, W)``.
    """

    is_latent = True

    def __init__(
        self,
        autoencoder: nn.Module,
        diffusion: DiffusionPrior,
        scale_factor: float = 1.0,
        data_scale: float = 2.0,
        data_shift: float = -1.0,
        image_shape=None,
        config: dict | None = None,
    ):
        super().__init__()
        if diffusion.data_scale != 1.0 or diffusion.data_shift != 0.0:
            raise ValueError(
                "LatentPrior: the latent diffusion prior must work on the latents as they are "
                f"(data_scale 1, data_shift 0), found {diffusion.data_scale}, {diffusion.data_shift}"
            )
        self.autoencoder = autoencoder
        self.diffusion = diffusion
        self.scale_factor = float(scale_factor)
        self.data_scale, self.data_shift = float(data_scale), float(data_shift)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.config = dict(config or {})

    # -- the Prior interface ----------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule:
        """The latent diffusion's noise schedule."""
        return self.diffusion.schedule

    @property
    def state_shape(self) -> tuple[int, ...] | None:
        """Latent shape ``(c, h, w)`` (the latent diffusion's ``image_shape``)."""
        return self.diffusion.image_shape

    @property
    def data_range(self) -> tuple[float, float]:
        """The image range the autoencoder was trained on (``config["data_range"]``, default ``(0, 1)``)."""
        lo, hi = self.config.get("data_range", (0.0, 1.0))
        return float(lo), float(hi)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in data units → scaled latents (B, c, h, w) (the encoder's mean)."""
        z = _ae_encode(self.autoencoder, x * self.data_scale + self.data_shift)
        return z * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images in data units (differentiable: guidance back-propagates through it)."""
        y = self.autoencoder.decode(z / self.scale_factor)
        return (y - self.data_shift) / self.data_scale

    def predict(self, z_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """One latent network call → ``(z0_hat, eps_hat)`` (latent space)."""
        return self.diffusion.predict(z_t, t)

    def ddim_step(self, z0_hat, eps_hat, t, t_prev, eta: float = 0.0, noise=None, mixing: str = "ddim"):
        """The latent diffusion's :meth:`DiffusionPrior.ddim_step`."""
        return self.diffusion.ddim_step(z0_hat, eps_hat, t, t_prev, eta, noise, mixing)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, eta: float = 0.0, generator=None, device=None) -> torch.Tensor:
        """Unconditional samples decoded to images (data units); latents are not clipped."""
        return self.decode(self.diffusion.sample(n, steps, eta, generator, device, clip_x0=False))


def _ae_encode(ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(ae, "encode_stage_2_inputs"):  # MONAI AutoencoderKL: sampled latent; use the mean instead
        mu, _ = ae.encode(x)
        return mu
    out = ae.encode(x)
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "latent_dist"):  # diffusers
        return out.latent_dist.mean
    return out
