"""Checkpoint format for priors, and training state I/O (safetensors + JSON, never pickle).

A **prior checkpoint** is two files with one stem:

* ``<stem>.safetensors``: tensors named ``network.<param>`` (and, for latent priors,
  ``autoencoder.<param>``);
* ``<stem>.json``: ``{"format": "diffrecon-prior", "format_version": 1, "kind": "diffusion"|"latent",
  "architecture": {"type": …, "kwargs": …}, "schedule": {…}, "parameterisation": "eps"|"x0"|"v"|"score",
  "time_input": …, "data": {"range": [lo, hi], "scale": …, "shift": …, "image_shape": [C, H, W],
  "description": …}, "training": {…}, "diffrecon_version": …}`` (+ ``autoencoder`` and
  ``scale_factor`` for latent priors). ``data`` may also record the training data's conventions
  (:data:`CONVENTIONS`: ``orientation``, ``intensity``, ``framing``); priors without them load as before
  and are then given the data as stored, with ``--image-scale`` 1 by default.

:func:`load_prior` checks every step and raises :class:`~diffrecon.errors.CheckpointError` naming the
file and the problem (missing file, unreadable/corrupt file, unknown architecture, missing or
unexpected tensors, mismatched shapes). There is no fallback to random weights.

A **training state** (``state.safetensors`` + ``state.json`` in a run folder) additionally holds the
EMA weights (``ema.<param>``), the AdamW moments (``optim.<i>.exp_avg``/``exp_avg_sq``, ``<i>`` =
parameter index) and the step counters, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch
from torch import nn

from ..errors import CheckpointError
from ..io.atomic import atomic_path, check_writable

FORMAT = "diffrecon-prior"
FORMAT_VERSION = 1
#: optional ``data`` entries describing how the training images were made (read into
#: ``prior.config["data_<key>"]``): ``orientation`` ({"axcodes": "RAS", "slice_axes": [0, 1, 2], …}),
#: ``intensity`` ({"normalisation": "p99.9 -> 1", "percentile": 99.9, "range": [0, 1], …}) and ``framing``
#: ({"threshold": 0.08, "margin_mm": 4.0}); see :mod:`diffrecon.datasets.framing`.
CONVENTIONS = ("orientation", "intensity", "framing")


def _stem(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p


def _file(stem: pathlib.Path, ext: str) -> pathlib.Path:
    """``<stem><ext>``, appended (``with_suffix`` would turn the stem ``prior.v2`` into ``prior.json``)."""
    return stem.parent / (stem.name + ext)


def save_safetensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict | None = None,
    overwrite: bool = True,
) -> None:
    """Write tensors atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    t = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(t, str(tmp), metadata=metadata)


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; any failure becomes a :class:`CheckpointError`."""
    from safetensors.torch import load_file

    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {p}")
    try:
        return load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt data
        raise CheckpointError(f"cannot read weights file {p} (corrupt or not safetensors): {exc}") from exc


def load_torch_weights(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a PyTorch ``.pt/.pth/.ckpt`` file with ``weights_only=True`` (no arbitrary unpickling), its
    tensors placed on ``map_location``.

    A file that needs pickled Python objects is refused with :class:`CheckpointError`.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {p}")
    try:
        return torch.load(str(p), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends
        raise CheckpointError(
            f"refusing to load {p}: it is not a plain tensor/state-dict file that loads with "
            f"weights_only=True ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable :class:`CheckpointError` on any mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    if problems:
        raise CheckpointError(f"{source} does not match the architecture: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _prior_config(prior) -> dict:
    from .. import __version__
    from .prior import LatentPrior

    if isinstance(prior, LatentPrior):
        d = prior.diffusion
        cfg = _diffusion_config(d)
        if prior.config.get("autoencoder_architecture") is None:
            raise CheckpointError(
                "the latent prior's config has no 'autoencoder_architecture'; pass architecture= to "
                "from_monai_autoencoder (or set prior.config['autoencoder_architecture'])"
            )
        cfg.update(
            kind="latent",
            autoencoder=prior.config.get("autoencoder_architecture"),
            scale_factor=prior.scale_factor,
            data={
                **cfg["data"],
                "scale": prior.data_scale,
                "shift": prior.data_shift,
                "image_shape": list(prior.image_shape) if prior.image_shape else None,
                "latent_shape": list(d.image_shape) if d.image_shape else None,
            },
        )
        for key in CONVENTIONS:
            if prior.config.get(f"data_{key}") is not None:
                cfg["data"][key] = prior.config[f"data_{key}"]
        for k, v in prior.config.items():
            if not (k.startswith("data_") and k[5:] in CONVENTIONS):
                cfg.setdefault(k, v)
    else:
        cfg = _diffusion_config(prior)
    cfg["diffrecon_version"] = __version__
    return cfg


def _diffusion_config(d) -> dict:
    arch = d.config.get("architecture")
    if arch is None:
        raise CheckpointError(
            "the prior's config has no 'architecture' entry, so no loadable checkpoint can be written; "
            "build it with from_monai(..., architecture={'type': 'monai.DiffusionModelUNet', 'kwargs': ...}) "
            "or set prior.config['architecture']"
        )
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "diffusion",
        "architecture": arch,
        "schedule": d.schedule.to_config(),
        "parameterisation": d.parameterisation,
        "time_input": d.time_input,
        "data": {
            "range": d.config.get("data_range", [0.0, 1.0]),
            "scale": d.data_scale,
            "shift": d.data_shift,
            "image_shape": list(d.image_shape) if d.image_shape else None,
            "description": d.config.get("data_description", ""),
        },
        "training": d.config.get("training", {}),
    }
    for key in CONVENTIONS:
        if d.config.get(f"data_{key}") is not None:
            cfg["data"][key] = d.config[f"data_{key}"]
    for k, v in d.config.items():
        if k not in ("architecture", "data_range", "data_description", "training", "stored_dtype",
                     "autoencoder_architecture", *(f"data_{key}" for key in CONVENTIONS)):
            cfg.setdefault(k, v)
    return cfg


def save_prior(
    prior, path: str | os.PathLike, overwrite: bool = False, dtype: torch.dtype | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` for a DiffusionPrior or LatentPrior.

    ``dtype=torch.float16`` stores floating-point tensors in half precision (bundled weights: half the
    size; :func:`load_prior` casts them back to the model's float32 parameters). An existing prior at
    ``path`` is replaced only with ``overwrite=True``; otherwise
    :class:`~diffrecon.errors.OutputExistsError`.
    """
    from .prior import LatentPrior

    stem = _stem(path)
    cfg = _prior_config(prior)
    if isinstance(prior, LatentPrior):
        tensors = {f"network.{k}": v for k, v in prior.diffusion.network.state_dict().items()}
        tensors.update({f"autoencoder.{k}": v for k, v in prior.autoencoder.state_dict().items()})
    else:
        tensors = {f"network.{k}": v for k, v in prior.network.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in tensors.items()}
        cfg["stored_dtype"] = str(dtype).replace("torch.", "")
    w, j = _file(stem, ".safetensors"), _file(stem, ".json")
    for target in (w, j):  # both checked before either is written: never half a prior replaced
        check_writable(target, overwrite)
    save_safetensors(tensors, w, metadata={"format": FORMAT}, overwrite=overwrite)
    with atomic_path(j, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2))
    return w, j


def read_config(path: str | os.PathLike) -> dict:
    """Read and validate a prior's JSON config."""
    j = _file(_stem(path), ".json")
    if not j.is_file():
        raise CheckpointError(f"config file not found: {j} (a prior is <stem>.json + <stem>.safetensors)")
    try:
        cfg = json.loads(j.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"config {j} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f'{j} is not a diffrecon prior config (expected "format": "{FORMAT}")')
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{j} has format_version {cfg['format_version']}; this diffrecon reads ≤ {FORMAT_VERSION}"
        )
    for key in ("architecture", "schedule", "parameterisation"):
        if key not in cfg:
            raise CheckpointError(f"{j} lacks the required key {key!r}")
    return cfg


def build_architecture(arch: dict) -> nn.Module:
    """The (randomly initialised) network of an architecture description: ``diffusers.*`` types through
    :func:`~diffrecon.priors.adapters.build_diffusers`, the others through
    :func:`~diffrecon.priors.networks.build_network`."""
    if isinstance(arch, dict) and str(arch.get("type", "")).startswith("diffusers."):
        from .adapters import build_diffusers

        return build_diffusers(arch)
    from .networks import build_network

    return build_network(arch)


def load_prior(path: str | os.PathLike, device="cpu"):
    """Load a prior written by :func:`save_prior` (path to the stem, the .json or the .safetensors)."""
    stem = _stem(path)
    cfg = read_config(stem)
    w = _file(stem, ".safetensors")
    tensors = load_safetensors(w)
    net = build_architecture(cfg["architecture"])
    net_state = {k[len("network.") :]: v for k, v in tensors.items() if k.startswith("network.")}
    load_state_dict_strict(net, net_state, f"{w} (network)")
    ae = None
    if cfg.get("kind", "diffusion") == "latent":
        if "autoencoder" not in cfg or cfg["autoencoder"] is None:
            raise CheckpointError(
                f"{_file(stem, '.json')}: a latent prior needs an 'autoencoder' architecture"
            )
        ae = build_architecture(cfg["autoencoder"])
        ae_state = {k[len("autoencoder.") :]: v for k, v in tensors.items() if k.startswith("autoencoder.")}
        load_state_dict_strict(ae, ae_state, f"{w} (autoencoder)")
    return prior_from_config(cfg, net, ae, str(_file(stem, ".json")), device)


def prior_from_config(cfg: dict, net: nn.Module, autoencoder: nn.Module | None, where: str, device="cpu"):
    """A :class:`DiffusionPrior` (or, with ``autoencoder``, a :class:`LatentPrior`) around loaded
    networks, from a checkpoint config ``cfg`` (schedule, parameterisation, time input, data map and
    shapes); ``where`` names the config in errors. Returned on ``device`` in eval mode."""
    from .prior import DiffusionPrior, LatentPrior
    from .schedule import schedule_from_config

    try:
        schedule = schedule_from_config(cfg["schedule"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{where}: bad schedule {cfg.get('schedule')!r:.80}: {exc}") from exc
    data = cfg.get("data", {}) or {}
    extra = {k: v for k, v in cfg.items() if k not in ("data",)}
    extra["data_range"] = data.get("range", [0.0, 1.0])
    extra["data_description"] = data.get("description", "")
    for key in CONVENTIONS:  # training conventions (optional; priors written before them have none)
        if data.get(key) is not None:
            extra[f"data_{key}"] = data[key]
    try:
        if autoencoder is not None:
            diff = DiffusionPrior(
                net,
                schedule,
                cfg["parameterisation"],
                cfg.get("time_input", "index"),
                data_scale=1.0,
                data_shift=0.0,
                image_shape=data.get("latent_shape"),
                config=extra,
            )
            prior = LatentPrior(
                autoencoder,
                diff,
                cfg.get("scale_factor", 1.0),
                data.get("scale", 2.0),
                data.get("shift", -1.0),
                image_shape=data.get("image_shape"),
                config={"autoencoder_architecture": cfg["autoencoder"], **extra},
            )
        else:
            prior = DiffusionPrior(
                net,
                schedule,
                cfg["parameterisation"],
                cfg.get("time_input", "index"),
                data_scale=data.get("scale", 2.0),
                data_shift=data.get("shift", -1.0),
                image_shape=data.get("image_shape"),
                config=extra,
            )
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    prior = prior.to(device).eval()
    if torch.device(device).type == "cpu" and isinstance(prior, DiffusionPrior) and _spatial_dims(cfg) == 2:
        prior.use_channels_last()
    return prior


def _spatial_dims(cfg: dict) -> int | None:
    return (cfg.get("architecture") or {}).get("kwargs", {}).get("spatial_dims")


# ----------------------------------------------------------------------------- training state
def save_training_state(
    run_dir: str | os.PathLike,
    model: nn.Module,
    ema: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    info: dict,
    prefix: str = "state",
) -> None:
    """Write ``<run_dir>/<prefix>.safetensors`` + ``.json`` (model, EMA, AdamW state, step info)."""
    run = pathlib.Path(run_dir)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    steps = {}
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        for key, val in st.items():
            if key == "step":
                steps[str(i)] = float(val)
            elif torch.is_tensor(val):
                tensors[f"optim.{i}.{key}"] = val
    meta = dict(info)
    meta["optimizer"] = {
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
        "steps": steps,
        "num_params": len(params),
    }
    save_safetensors(tensors, run / f"{prefix}.safetensors")
    with atomic_path(run / f"{prefix}.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=float))


def load_training_state(
    run_dir: str | os.PathLike,
    model: nn.Module,
    ema: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    prefix: str = "state",
) -> dict:
    """Restore what :func:`save_training_state` wrote; returns the info dict."""
    run = pathlib.Path(run_dir)
    j = run / f"{prefix}.json"
    if not j.is_file():
        raise CheckpointError(f"no training state to resume in {run} (missing {j.name})")
    try:
        info = json.loads(j.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{j} is corrupt: {exc}") from exc
    tensors = load_safetensors(run / f"{prefix}.safetensors")
    load_state_dict_strict(
        model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, f"{run}/{prefix} (model)"
    )
    for k in ema:
        if f"ema.{k}" not in tensors:
            raise CheckpointError(f"{run}/{prefix}: EMA tensor {k} missing")
        ema[k].copy_(tensors[f"ema.{k}"])
    params = [p for g in optimizer.param_groups for p in g["params"]]
    oi = info.get("optimizer", {})
    if oi.get("num_params") != len(params):
        raise CheckpointError(
            f"{run}/{prefix}: optimizer has {oi.get('num_params')} parameters, model {len(params)}"
        )
    for g, saved in zip(optimizer.param_groups, oi.get("param_groups", []), strict=False):
        g.update({k: v for k, v in saved.items() if k in g})
    for i, p in enumerate(params):
        st = {}
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if f"optim.{i}.{key}" in tensors:
                st[key] = tensors[f"optim.{i}.{key}"].to(p.device)
        if st:
            st["step"] = torch.tensor(oi.get("steps", {}).get(str(i), 0.0))
            optimizer.state[p] = st
    return info
