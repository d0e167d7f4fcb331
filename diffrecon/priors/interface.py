r"""The prior interface every solver accepts: pixel-space and latent diffusion priors alike.

A solver of :mod:`diffrecon.recon.diffusion` sees a prior only through :class:`Prior`. The diffusion
state :math:`x_t = a_t z_0 + s_t\varepsilon` lives in the prior's **model space** (shape
:attr:`Prior.state_shape`); images live in **data units** (shape :attr:`Prior.image_shape`, range
:attr:`Prior.data_range`); :meth:`Prior.encode` / :meth:`Prior.decode` map between the two:

=====================  ==========================================  ===========================================
                       :class:`~diffrecon.priors.DiffusionPrior`   :class:`~diffrecon.priors.LatentPrior`
=====================  ==========================================  ===========================================
model space            pixels, affinely rescaled (e.g. [−1, 1])    the autoencoder's scaled latents
``encode``/``decode``  ``normalise`` / ``denormalise``             encoder mean / decoder (differentiable)
``state_shape``        ``image_shape`` ``(C, H, W)``               latent shape ``(c, h, w)``
``predict``            the network, read per parameterisation      the latent network
=====================  ==========================================  ===========================================

Guidance through a latent prior (latent DPS, PSLD, STSL) differentiates a loss of
``decode(ẑ0(x_t))`` with respect to ``x_t``: both the network and the decoder are in the graph.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .schedule import Schedule

Tensor = torch.Tensor


@runtime_checkable
class Prior(Protocol):
    """What a diffusion solver needs from a prior (implemented by ``DiffusionPrior`` and ``LatentPrior``).

    Attributes:
        schedule: the noise schedule (:math:`a_t, s_t`, timestep grids).
        image_shape: ``(C, H, W)`` of images in data units (``None`` if unknown).
        is_latent: ``True`` when the model space is an autoencoder's latent space.
    """

    schedule: Schedule
    image_shape: tuple[int, ...] | None
    is_latent: bool

    @property
    def state_shape(self) -> tuple[int, ...] | None:
        """Shape of one diffusion state :math:`x_t` (without the batch axis)."""
        ...

    @property
    def data_range(self) -> tuple[float, float]:
        """The range of the training images, in data units (e.g. ``(0, 1)``)."""
        ...

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in data units → model space ``(B, *state_shape)``."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Model space ``(B, *state_shape)`` → images ``(B, C, H, W)`` in data units."""
        ...

    def predict(self, x_t: Tensor, t) -> tuple[Tensor, Tensor]:
        """One network call: Tweedie's :math:`\\hat z_0` and :math:`\\hat\\varepsilon` at times ``t`` (B,)."""
        ...

    def ddim_step(self, z0_hat: Tensor, eps_hat: Tensor, t, t_prev, eta: float = 0.0, noise=None,
                  mixing: str = "ddim") -> Tensor:
        """One DDIM update from ``t`` to ``t_prev`` (``None``: the end of the chain)."""
        ...
