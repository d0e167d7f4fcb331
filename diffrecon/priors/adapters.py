"""Build :class:`DiffusionPrior`/:class:`LatentPrior` from other libraries' components.

* **MONAI** (core dependency): ``DiffusionModelUNet`` + ``DDPMScheduler``/``DDIMScheduler``
  (:func:`from_monai`), ``AutoencoderKL`` (:func:`from_monai_autoencoder`). The constructor arguments
  of both networks are read back from the modules (:func:`monai_architecture`), so such priors can be
  written with :func:`~diffrecon.priors.save_prior`.
* **diffusers** (optional extra ``diffusers``, imported lazily, never touches the hub):
  ``UNet2DModel`` + scheduler (+ ``AutoencoderKL`` for latent models) saved in a local folder with
  ``save_pretrained`` (:func:`from_diffusers`); saved priors record
  ``{"type": "diffusers.UNet2DModel", "config": unet.config}`` and are rebuilt by :func:`build_diffusers`.
* **plain PyTorch state dicts** (``.pth``/``.pt``/``.ckpt``) plus an architecture JSON
  (:func:`from_state_dict`), loaded with ``torch.load(weights_only=True)``.

The schedule is taken from the scheduler's ``alphas_cumprod`` (so any beta schedule transfers
exactly) and the parameterisation from its ``prediction_type``
(``epsilon`` → ``"eps"``, ``sample`` → ``"x0"``, ``v_prediction`` → ``"v"``).
"""

from __future__ import annotations

import contextlib
import json
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


class DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` as ``encode(x) -> mean latent`` and ``decode(z) -> image``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def encode(self, x):
        return self.vae.encode(x).latent_dist.mean

    def decode(self, z):
        return self.vae.decode(z).sample


_DiffusersVAE = DiffusersVAE  # earlier private name


def core_module(net: nn.Module) -> nn.Module:
    """The library module inside one of the wrappers above (``net`` itself otherwise): the module whose
    parameter names a foreign state dict uses."""
    if isinstance(net, (MonaiUNet, DiffusersUNet)):
        return net.unet
    if isinstance(net, DiffusersVAE):
        return net.vae
    return net


# ----------------------------------------------------------------------------- MONAI
def _signature(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _first(module: nn.Module, cls):
    return next((m for m in module.modules() if isinstance(m, cls)), None)


def _attention_kwargs(module: nn.Module) -> dict:
    from monai.networks.blocks.selfattention import SABlock

    sa = _first(module, SABlock)
    if sa is None:
        return {}
    return {k: bool(getattr(sa, k)) for k in ("include_fc", "use_combined_linear", "use_flash_attention")}


def _spatial_dims(module: nn.Module) -> int | None:
    for m in module.modules():
        for dims, cls in ((1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)):
            if isinstance(m, cls):
                return dims
    return None


def _matching(module: nn.Module, cls, candidates: list[dict]) -> dict | None:
    """The first kwargs in ``candidates`` whose ``cls(**kwargs)`` has exactly ``module``'s tensor names and
    shapes (built on the meta device: no memory, no initialisation)."""
    want = _signature(module)
    for kw in candidates:
        try:
            with torch.device("meta"):
                got = _signature(cls(**kw))
        except Exception:  # noqa: BLE001 - a candidate the constructor rejects is simply not the one
            continue
        if got == want:
            return kw
    return None


def _plain(kw: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}


def monai_architecture(module: nn.Module) -> dict | None:
    """``{"type": "monai.DiffusionModelUNet"|"monai.AutoencoderKL", "kwargs": …}`` for an unconditioned MONAI
    ``DiffusionModelUNet`` or an ``AutoencoderKL``, read back from the module's attributes and verified
    (a network built from the kwargs has the same tensor names and shapes); ``None`` when that is not
    possible (another class, a cross-attention-conditioned UNet, an unreadable variant)."""
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

    gn = _first(module, nn.GroupNorm)
    dims = _spatial_dims(module)
    if gn is None or dims is None:
        return None
    if type(module) is DiffusionModelUNet:
        if module.with_conditioning:
            return None
        from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock

        down = next((b.downsampler for b in module.down_blocks if b.downsampler is not None), None)
        base = dict(
            spatial_dims=dims,
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            num_res_blocks=tuple(module.num_res_blocks),
            channels=tuple(module.block_out_channels),
            attention_levels=tuple(module.attention_levels),
            norm_num_groups=gn.num_groups,
            norm_eps=gn.eps,
            resblock_updown=isinstance(down, DiffusionUNetResnetBlock),
            num_head_channels=tuple(module.num_head_channels),
            num_class_embeds=module.num_class_embeds,
            **_attention_kwargs(module),
        )
        kw = _matching(module, DiffusionModelUNet, [base])
        return {"type": "monai.DiffusionModelUNet", "kwargs": _plain(kw)} if kw else None
    if type(module) is AutoencoderKL:
        enc, dec = module.encoder, module.decoder
        base = dict(
            spatial_dims=dims,
            in_channels=enc.in_channels,
            out_channels=dec.out_channels,
            num_res_blocks=tuple(enc.num_res_blocks),
            channels=tuple(enc.channels),
            attention_levels=tuple(enc.attention_levels),
            latent_channels=module.latent_channels,
            norm_num_groups=gn.num_groups,
            norm_eps=gn.eps,
            use_convtranspose=_first(dec, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
            is not None,
            **_attention_kwargs(module),
        )
        cands = [
            {**base, "with_encoder_nonlocal_attn": e, "with_decoder_nonlocal_attn": d}
            for e in (True, False)
            for d in (True, False)
        ]
        kw = _matching(module, AutoencoderKL, cands)
        return {"type": "monai.AutoencoderKL", "kwargs": _plain(kw)} if kw else None
    return None


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
        architecture: ``{"type": "monai.DiffusionModelUNet", "kwargs": …}``; by default read back from
            ``unet`` (:func:`monai_architecture`). With one, the prior can be saved with
            :func:`~diffrecon.priors.save_prior` (the network is then stored unwrapped); without one
            (a network that is not a plain MONAI UNet) it still samples but cannot be saved.
    """
    sched = VPSchedule(alphas_cumprod=torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64))
    if architecture is None:
        architecture = monai_architecture(unet)
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
    architecture: dict | None = None,
) -> LatentPrior:
    """Latent prior from a MONAI ``AutoencoderKL`` (its ``encode`` returns ``(mu, sigma)``; the mean is
    used) and a diffusion prior trained on ``scale_factor``-scaled latents.

    ``architecture`` (``{"type": "monai.AutoencoderKL", "kwargs": …}``, read back from the module by
    default) is what :func:`~diffrecon.priors.save_prior` stores to rebuild the autoencoder."""
    if not hasattr(autoencoder, "encode") or not hasattr(autoencoder, "decode"):
        raise TypeError("autoencoder must have encode() and decode() methods")
    if architecture is None:
        architecture = monai_architecture(autoencoder)
    diffusion.data_scale, diffusion.data_shift = 1.0, 0.0
    cfg = {"autoencoder_architecture": architecture} if architecture else {}
    return LatentPrior(autoencoder, diffusion, scale_factor, data_scale, data_shift, image_shape, config=cfg)


# ----------------------------------------------------------------------------- diffusers
_DIFFUSERS = {"diffusers.UNet2DModel": ("UNet2DModel", DiffusersUNet),
              "diffusers.AutoencoderKL": ("AutoencoderKL", DiffusersVAE)}


def diffusers_architecture(model: nn.Module, typ: str) -> dict:
    """``{"type": typ, "config": …}`` from a diffusers model's ``config`` (JSON-ready; private
    ``_``-keys dropped)."""
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(model.config).items()
           if not k.startswith("_")}
    return {"type": typ, "config": cfg}


@contextlib.contextmanager
def _quiet_diffusers(diffusers):
    """diffusers' own log lines (e.g. advice to install ``accelerate``) off while it builds or loads a
    model: they concern how diffusers is installed, not the user's run, and its logger writes to the
    ``sys.stderr`` it saw first rather than through diffrecon's logging."""
    log = diffusers.utils.logging
    before = log.get_verbosity()
    log.set_verbosity_error()
    try:
        yield
    finally:
        log.set_verbosity(before)


def build_diffusers(arch: dict) -> nn.Module:
    """Rebuild a wrapped diffusers network (:class:`DiffusersUNet`/:class:`DiffusersVAE`) from
    ``{"type": "diffusers.UNet2DModel"|"diffusers.AutoencoderKL", "config": {...}}`` with
    ``from_config`` (random weights, to be loaded); needs the ``diffusers`` extra."""
    typ = arch.get("type")
    if typ not in _DIFFUSERS:
        raise CheckpointError(f"unknown architecture {typ!r}; known diffusers types: {sorted(_DIFFUSERS)}")
    if not isinstance(arch.get("config"), dict):
        raise CheckpointError(f"architecture {typ} needs a 'config' dict (the model's config.json)")
    diffusers = require("diffusers", "diffusers")
    name, wrapper = _DIFFUSERS[typ]
    try:
        with _quiet_diffusers(diffusers):
            model = getattr(diffusers, name).from_config(dict(arch["config"]))
    except Exception as exc:  # noqa: BLE001 - diffusers raises ValueError/TypeError/KeyError for bad configs
        raise CheckpointError(f"cannot build {typ} from its config: {exc}") from exc
    return wrapper(model)


def from_diffusers(
    path: str | os.PathLike, data_scale: float = 2.0, data_shift: float = -1.0, device="cpu"
) -> DiffusionPrior | LatentPrior:
    """Load ``unet/`` (``UNet2DModel``), ``scheduler/`` and optionally ``vae/`` (``AutoencoderKL``) from a
    local diffusers folder (as written by ``save_pretrained``). Needs ``pip install 'diffrecon[diffusers]'``;
    nothing is downloaded (``local_files_only=True``). The prior records its architectures, so
    :func:`~diffrecon.priors.save_prior` can convert it to diffrecon's format."""
    diffusers = require("diffusers", "diffusers")
    root = pathlib.Path(path)
    for part in ("unet", "scheduler"):
        if not (root / part).is_dir():
            raise CheckpointError(f"no diffusers folder at {root} (missing {root / part}/)")
    try:
        with _quiet_diffusers(diffusers):
            unet = diffusers.UNet2DModel.from_pretrained(str(root / "unet"), local_files_only=True)
            scheduler = diffusers.DDPMScheduler.from_pretrained(str(root / "scheduler"),
                                                                local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - diffusers raises OSError/ValueError/EnvironmentError
        raise CheckpointError(f"cannot load diffusers components from {root}: {_first_line(exc)}") from exc
    sched = VPSchedule(alphas_cumprod=torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64))
    cfg = unet.config
    size = (
        tuple(cfg.sample_size) if isinstance(cfg.sample_size, (list, tuple))
        else (cfg.sample_size, cfg.sample_size)
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
        config={"architecture": diffusers_architecture(unet, "diffusers.UNet2DModel"), "source": str(root)},
    )
    if not latent:
        return diff.to(device).eval()
    try:
        with _quiet_diffusers(diffusers):
            vae = diffusers.AutoencoderKL.from_pretrained(str(root / "vae"), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot load the VAE from {root / 'vae'}: {_first_line(exc)}") from exc
    scale = float(getattr(vae.config, "scaling_factor", 1.0))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    image_shape = (vae.config.in_channels, size[0] * factor, size[1] * factor)
    arch = diffusers_architecture(vae, "diffusers.AutoencoderKL")
    return LatentPrior(
        DiffusersVAE(vae), diff, scale, data_scale, data_shift, image_shape,
        config={"autoencoder_architecture": arch, "source": str(root)},
    ).to(device).eval()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ----------------------------------------------------------------------------- PyTorch state dicts
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
# entries of a training checkpoint that may hold the weights, in order of preference (EMA first)
STATE_ENTRIES = ("ema", "ema_model", "model_ema", "ema_state_dict", "state_dict", "model",
                 "model_state_dict", "net", "network", "params")
# prefixes that wrappers add to every name (DataParallel/DDP, torch.compile, Lightning modules)
STATE_PREFIXES = ("module.", "_orig_mod.", "model.", "network.", "net.")


def _is_tensor_map(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def state_dict_candidates(obj, where: str = "") -> list[tuple[str, dict]]:
    """Every name → tensor mapping in a loaded checkpoint ``obj``, as ``(entry, state)`` pairs, with
    ``entry`` the path of nested keys (``""`` for the top level, ``"ema"``, ``"model/state_dict"``…),
    preferred entries (:data:`STATE_ENTRIES`) first."""
    if _is_tensor_map(obj):
        return [(where, obj)]
    if not isinstance(obj, dict):
        return []
    keys = [k for k in STATE_ENTRIES if k in obj] + [k for k in obj if k not in STATE_ENTRIES]
    out = []
    for k in keys:
        out += state_dict_candidates(obj[k], f"{where}/{k}" if where else str(k))
    return out


def strip_prefixes(state: dict, own: set[str]) -> dict:
    """``state`` with the wrapper prefixes (:data:`STATE_PREFIXES`) that every name shares removed, one
    after another, as far as that makes more names equal to ``own`` (the model's names)."""
    variants, cur = [state], state
    while True:
        p = next((p for p in STATE_PREFIXES if all(k.startswith(p) for k in cur)), None)
        if p is None:
            break
        cur = {k[len(p):]: v for k, v in cur.items()}
        variants.append(cur)
    return max(variants, key=lambda s: len(own & set(s)))  # ties: the least stripped


def match_state_dict(obj, module: nn.Module, source: str) -> tuple[dict, str]:
    """The state dict in ``obj`` (a loaded checkpoint: a plain state dict, or one nested under
    ``state_dict``/``model``/``ema``…, names possibly prefixed by ``module.``…) that fits ``module``.

    Returns ``(state, entry)``. The first candidate with exactly the module's names wins; otherwise the
    closest one is checked strictly, so the :class:`CheckpointError` lists missing/unexpected names and
    shape mismatches. Never returns weights that do not fit."""
    from .checkpoint import load_state_dict_strict

    cands = state_dict_candidates(obj)
    if not cands:
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise CheckpointError(
            f"{source} holds no name -> tensor mapping (a state dict); found {type(obj).__name__}{keys}"
        )
    own = set(module.state_dict())
    fitted = [(strip_prefixes(s, own), e) for e, s in cands]
    for state, entry in fitted:
        if set(state) == own:
            load_state_dict_strict(module, state, f"{source}{f' [{entry}]' if entry else ''}")
            return state, entry
    state, entry = max(fitted, key=lambda se: len(own & set(se[0])))
    load_state_dict_strict(module, state, f"{source}{f' [{entry}]' if entry else ''}")
    return state, entry  # pragma: no cover - load_state_dict_strict raised


def read_architecture(architecture, default_path: pathlib.Path | None = None) -> tuple[dict, str]:
    """The prior description for a state dict: ``architecture`` (a dict, or a path to a JSON file), else
    ``default_path`` if it exists. Returns ``(config, where)``.

    The JSON is the one diffrecon's own checkpoints use (:mod:`.checkpoint`): ``"architecture"``
    (``{"type": …, "kwargs"|"config": …}``), ``"schedule"``, ``"parameterisation"`` and optionally
    ``"time_input"`` and ``"data"`` (``range``, ``scale``, ``shift``, ``image_shape``); ``"format"`` may be
    left out."""
    if isinstance(architecture, dict):
        cfg, where = dict(architecture), "architecture="
    else:
        path = pathlib.Path(architecture) if architecture is not None else default_path
        if path is None or not path.is_file():
            raise CheckpointError(f"no architecture JSON at {path}")
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"architecture file {path} is not valid JSON: {exc}") from exc
        where = str(path)
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"{where} must hold a JSON object with architecture, schedule, parameterisation"
        )
    if "architecture" not in cfg and "type" in cfg:
        raise CheckpointError(
            f'{where} describes only the network; put it under "architecture" next to "schedule" and '
            f'"parameterisation" (the layout of a diffrecon checkpoint JSON, see docs/priors.md)'
        )
    for key in ("architecture", "schedule", "parameterisation"):
        if key not in cfg:
            raise CheckpointError(
                f"{where} lacks the required key {key!r} (see docs/priors.md for the layout)"
            )
    if cfg.get("kind", "diffusion") != "diffusion":
        raise CheckpointError(
            f"{where}: a state dict file holds one network; kind {cfg.get('kind')!r} is not supported "
            "(save a latent prior with diffrecon.priors.save_prior)"
        )
    return cfg, where


def from_state_dict(path: str | os.PathLike, architecture=None, device="cpu") -> DiffusionPrior:
    """Prior from a weights-only PyTorch state dict file (``.pth``/``.pt``/``.ckpt``, or a bare
    ``.safetensors``) and its description.

    Args:
        path: the weights; read with ``torch.load(weights_only=True, map_location="cpu")`` (safetensors
            with ``safetensors``). Nesting under ``state_dict``/``model``/``ema``… and prefixes such as
            ``module.`` are undone (:func:`match_state_dict`).
        architecture: a dict or a JSON file (:func:`read_architecture`); default ``<stem>.json`` beside
            ``path``.
        device: where the prior goes.

    Raises :class:`CheckpointError` naming the files for a missing file, missing architecture, or weights
    that do not fit the architecture (missing/unexpected names, shape mismatches)."""
    from .checkpoint import build_architecture, load_safetensors, load_torch_weights, prior_from_config

    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"no PyTorch weights file at {p}")
    sibling = p.with_suffix(".json")
    if architecture is None and not sibling.is_file():
        raise CheckpointError(
            f"{p} holds weights only: give its architecture JSON with --architecture FILE.json "
            f"(Python: architecture=...), or put it at {sibling}"
        )
    cfg, where = read_architecture(architecture, sibling)
    obj = load_safetensors(p) if p.suffix == ".safetensors" else load_torch_weights(p)
    net = build_architecture(cfg["architecture"])
    _, entry = match_state_dict(obj, core_module(net), str(p))
    cfg = {**cfg, "source": {"weights": str(p), "entry": entry, "architecture": where}}
    return prior_from_config(cfg, net, None, where, device)
