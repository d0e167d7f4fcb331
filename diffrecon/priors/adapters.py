"""Build :class:`DiffusionPrior`/:class:`LatentPrior` from other libraries' components.

* **MONAI** (core dependency): ``DiffusionModelUNet`` + ``DDPMScheduler``/``DDIMScheduler``
  (:func:`from_monai`), ``AutoencoderKL`` (:func:`from_monai_autoencoder`).
* **diffusers** (optional extra ``diffusers``, imported lazily, never touches the hub):
  ``UNet2DModel`` + scheduler (+ ``AutoencoderKL`` for latent models) saved in a local folder with
  ``save_pretrained`` (:func:`from_diffusers`).

The schedule is taken from the scheduler's ``alphas_cumprod`` (so any beta schedule transfers
exactly) and the parameterisation from its ``prediction_type``
(``epsilon`` → ``"eps"``, ``sample`` → ``"x0"``, ``v_prediction`` → ``"v"``).
"""

from __future__ import annotations

import os
import pathlib

import torch
from torch import nn

from ..errors import CheckpointError, require
from .prior import DiffusionPrior, LatentPrior
from .schedule import VPSchedule

_PRED = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def _parameterisation(prediction_type: str) -> str:
    if prediction_type not in _PRED:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}; expected one of {sorted(_PRED)}")
    return _PRED[prediction_type]


class MonaiUNet(nn.Module):
    """Calls a MONAI ``DiffusionModelUNet`` as ``net(x, timesteps)`` (timesteps as float step indices)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, c):
        return self.unet(x=x, timesteps=c)


class DiffusersUNet(nn.Module):
    """Calls a diffusers ``UNet2DModel`` and returns its ``.sample`` tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, c):
        return self.unet(x, c).sample


def from_monai(
    unet: nn.Module,
    scheduler,
    image_shape=None,
    data_scale: float = 2.0,
    data_shift: float = -1.0,
    architecture: dict | None = None,
) -> DiffusionPrior:
    """Prior from a MONAI ``DiffusionModelUNet`` and a ``DDPMScheduler``/``DDIMScheduler``.

    Args:
        unet: the trained network (called as ``unet(x=x, timesteps=t)``).
        scheduler: its training scheduler; ``alphas_cumprod`` (T,) and ``prediction_type`` are used.
        image_shape: (C, H, W) of the training images (needed for sampling).
        data_scale: images were mapped to the network's input range by ``data_scale·x + data_shift``.
        data_shift: the shift of that map.
        architecture: ``{"type": "monai.DiffusionModelUNet", "kwargs": …}`` so the prior can be saved with
            :func:`~diffrecon.priors.save_prior` (the network is then stored unwrapped).
    """
    sched = VPSchedule(alphas_cumprod=torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64))
    net = unet if architecture is not None else MonaiUNet(unet)
    return DiffusionPrior(
        net,
        sched,
        _parameterisation(str(scheduler.prediction_type)),
        "index",
        data_scale,
        data_shift,
        image_shape,
        config={"architecture": architecture} if architecture else {},
    )


def from_monai_autoencoder(
    autoencoder: nn.Module,
    diffusion: DiffusionPrior,
    scale_factor: float = 1.0,
    data_scale: float = 2.0,
    data_shift: float = -1.0,
    image_shape=None,
) -> LatentPrior:
    """Latent prior from a MONAI ``AutoencoderKL`` (its ``encode`` returns ``(mu, sigma)``; the mean is
    used) and a diffusion prior trained on ``scale_factor``-scaled latents."""
    if not hasattr(autoencoder, "encode") or not hasattr(autoencoder, "decode"):
        raise TypeError("autoencoder must have encode() and decode() methods")
    diffusion.data_scale, diffusion.data_shift = 1.0, 0.0
    return LatentPrior(autoencoder, diffusion, scale_factor, data_scale, data_shift, image_shape)


def from_diffusers(
    path: str | os.PathLike, data_scale: float = 2.0, data_shift: float = -1.0, device="cpu"
) -> DiffusionPrior | LatentPrior:
    """Load ``unet/`` (``UNet2DModel``), ``scheduler/`` and optionally ``vae/`` (``AutoencoderKL``) from a
    local diffusers folder (as written by ``save_pretrained``). Needs ``pip install 'diffrecon[diffusers]'``;
    nothing is downloaded (``local_files_only=True``)."""
    diffusers = require("diffusers", "diffusers")
    root = pathlib.Path(path)
    if not (root / "unet").is_dir():
        raise CheckpointError(f"{root} is not a diffusers folder: missing {root / 'unet'}")
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(root / "unet"), local_files_only=True)
        sch_dir = root / "scheduler"
        if not sch_dir.is_dir():
            raise CheckpointError(f"{root} has no scheduler/ folder")
        scheduler = diffusers.DDPMScheduler.from_pretrained(str(sch_dir), local_files_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers raises OSError/ValueError/EnvironmentError
        raise CheckpointError(f"cannot load diffusers components from {root}: {exc}") from exc
    sched = VPSchedule(alphas_cumprod=torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64))
    cfg = unet.config
    size = (
        cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
    )
    latent = (root / "vae").is_dir()
    diff = DiffusionPrior(
        DiffusersUNet(unet),
        sched,
        _parameterisation(scheduler.config.prediction_type),
        "index",
        1.0 if latent else data_scale,
        0.0 if latent else data_shift,
        image_shape=(cfg.in_channels, *size),
    )
    if not latent:
        return diff.to(device).eval()
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(str(root / "vae"), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot load the VAE from {root / 'vae'}: {exc}") from exc
    scale = float(getattr(vae.config, "scaling_factor", 1.0))
    return LatentPrior(_DiffusersVAE(vae), diff, scale, data_scale, data_shift).to(device).eval()


class _DiffusersVAE(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def encode(self, x):
        return self.vae.encode(x).latent_dist.mean

    def decode(self, z):
        return self.vae.decode(z).sample
