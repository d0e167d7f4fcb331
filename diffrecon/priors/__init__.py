"""Diffusion priors: schedules, the ``DiffusionPrior``/``LatentPrior`` interface, adapters, checkpoints,
training, and the bundled priors.

Quick start::

    import diffrecon.priors as P
    prior = P.load("head-64")                       # bundled 2D 64×64 head-slice prior (VP, v-prediction)
    mine = P.load("my_unet.pth", architecture="my_unet.json")   # or a checkpoint stem, a diffusers folder
    x_hat = prior.denoise(noisy_slices, sigma=0.1)  # Tweedie/MMSE denoising in [0, 1] image units
"""

from .adapters import from_diffusers, from_state_dict
from .checkpoint import load_prior, load_torch_weights, save_prior
from .interface import Prior
from .prior import DiffusionPrior, LatentPrior
from .registry import available, load
from .schedule import Schedule, VESchedule, VPContinuousSchedule, VPSchedule, schedule_from_config

__all__ = [
    "DiffusionPrior",
    "LatentPrior",
    "Prior",
    "Schedule",
    "VPSchedule",
    "VPContinuousSchedule",
    "VESchedule",
    "schedule_from_config",
    "load",
    "available",
    "load_prior",
    "save_prior",
    "load_torch_weights",
    "from_diffusers",
    "from_state_dict",
]
