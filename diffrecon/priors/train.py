r"""Training of 2D slice priors: denoising score matching with EMA, checkpoints and resume.

Objective (for a batch of clean slices :math:`x` in data units, :math:`z_0 = \mathrm{normalise}(x)`):

.. math::

    \mathcal L = \mathbb E_{t,\varepsilon}\,
    \| f_\theta(a_t z_0 + s_t\varepsilon, c(t)) - y(z_0,\varepsilon,t)\|^2

with the target :math:`y` given by the parameterisation (ε, x0, v = a_tε − s_t z_0, or score
−ε/s_t). Times are drawn uniformly over the schedule, except that a fraction ``low_t_frac`` of
each batch is drawn from the low-noise range ``[0, low_t_max)`` where denoising quality
(input PSNR 15–30 dB) is measured. Optimiser: AdamW with linear warm-up and gradient-norm
clipping; EMA of the weights with decay ``min(ema_decay, (1+n)/(10+n))``; optional CUDA mixed
precision; DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1; gloo on CPU, nccl on CUDA).

Validation: for each input PSNR level :math:`p` (dB, data range 1) the step whose noise-to-signal
ratio is :math:`s_t/a_t = \mathrm{scale}\cdot10^{-p/20}` is used; the input PSNR of
:math:`x_t/a_t` and the PSNR of the (EMA) Tweedie estimate are printed and logged.

Run folder layout: ``state.safetensors``/``state.json`` (resume), ``ema_prior.{safetensors,json}``
(loadable prior from the EMA weights, refreshed at every checkpoint), ``log.jsonl`` (one JSON
object per log/validation event).
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DiffreconError, FileFormatError, InputDataError
from ..metrics import psnr
from .checkpoint import load_training_state, save_prior, save_training_state
from .networks import build_network, unet_config
from .prior import DiffusionPrior, LatentPrior
from .schedule import schedule_from_config


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``state.json``)."""

    kind: str = "diffusion"  # or "latent"
    image_size: int = 64
    architecture: dict = field(default_factory=lambda: unet_config((32, 64, 128)))
    schedule: dict = field(
        default_factory=lambda: {
            "type": "vp",
            "beta_schedule": "linear",
            "num_steps": 1000,
            "beta_start": 1e-4,
            "beta_end": 0.02,
        }
    )
    parameterisation: str = "v"
    time_input: str = "index"
    data_scale: float = 2.0
    data_shift: float = -1.0
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: int = 200
    steps: int = 100000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    low_t_frac: float = 0.5
    low_t_max: int = 250
    augment: bool = True
    val_every: int = 250
    val_levels: list = field(default_factory=lambda: [30.0, 25.0, 20.0, 15.0, 10.0])
    log_every: int = 25
    ckpt_minutes: float = 5.0
    seed: int = 0
    mixed_precision: bool = False
    data_description: str = ""
    # training conventions recorded in the prior's JSON ``data`` (orientation, intensity, framing; see
    # diffrecon.datasets.framing.head_conventions / nifti_conventions); None: not recorded
    data_orientation: dict | None = None
    data_intensity: dict | None = None
    data_framing: dict | None = None
    # latent priors
    ae_architecture: dict | None = None
    ae_steps: int = 0
    ae_lr: float = 1e-3
    ae_kl_weight: float = 1e-6


# ----------------------------------------------------------------------------------- data
class SliceSource:
    """Training slices in memory, (N, 1, H, W) float16, with optional re-scan of a bank folder."""

    def __init__(self, slices: np.ndarray | torch.Tensor, bank_dir: str | None = None, holdout: int = 0):
        self.bank_dir = bank_dir
        self.holdout = holdout
        self._set(slices)

    def _set(self, slices):
        t = torch.as_tensor(np.asarray(slices, dtype=np.float16))
        if t.ndim == 3:
            t = t[:, None]
        if t.ndim != 4 or t.shape[0] == 0:
            raise InputDataError(
                f"training slices must be (N, H, W) or (N, 1, H, W) with N > 0, got {tuple(t.shape)}"
            )
        if not torch.isfinite(t.float()).all():
            raise InputDataError("training slices contain NaN or Inf")
        self.val = t[: self.holdout]
        self.train = t[self.holdout :]
        if self.train.shape[0] == 0:
            raise InputDataError("no training slices left after holding out validation slices")

    def rescan(self) -> bool:
        """Reload the bank folder if new shards appeared; returns True if the data changed."""
        if not self.bank_dir:
            return False
        from ..datasets.bank import load_bank

        n = sum(1 for _ in pathlib.Path(self.bank_dir).glob("shard-*.npy"))
        if n == getattr(self, "_nshards", None):
            return False
        self._nshards = n
        self._set(_shuffled(load_bank(self.bank_dir)))
        return True

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self.train.shape[0], (n,), generator=generator)
        return self.train[idx].float()


def _shuffled(arr: np.ndarray, seed: int = 1234) -> np.ndarray:
    """Fixed permutation so the held-out head of the array is a random but stable subset."""
    return arr[np.random.default_rng(seed).permutation(arr.shape[0])]


def augment_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light on-the-fly augmentation: random zoom (±6 %) and shift (±2 px), random gamma (σ_log = 0.1)."""
    b = x.shape[0]
    zoom = 1 + 0.06 * (2 * torch.rand(b, generator=g) - 1)
    shift = (2 * torch.rand(b, 2, generator=g) - 1) * (2.0 * 2 / x.shape[-1])
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = zoom
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(0.1 * torch.randn(b, generator=g)).view(b, 1, 1, 1)
    return y.clamp(0, 1) ** gamma


def slices_from_nifti(
    paths, size: int = 64, axes=(0, 1, 2), min_mean: float = 0.03, percentiles=(0.0, 99.9)
) -> np.ndarray:
    """MONAI pipeline: load → channel first → RAS → ``percentiles`` mapped to [0, 1] (clipped) → crop to
    the foreground (> 0.08) → pad to a cube → resize to ``size``³ (anti-aliased trilinear) → informative
    slices along ``axes``. Returns (N, size, size) float32.

    Every file's header is checked first (:func:`~diffrecon.io.nifti.check_nifti_header`: unreadable,
    complex or too large for memory is an error), before MONAI reads any of them."""
    from ..datasets.bank import volume_slices
    from ..io.nifti import check_nifti_header

    files = []
    for p in paths:
        p = pathlib.Path(p)
        if p.is_dir():
            files += sorted(list(p.glob("*.nii")) + list(p.glob("*.nii.gz")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputDataError(f"training data path not found: {p}")
    if not files:
        raise InputDataError(f"no NIfTI files (*.nii, *.nii.gz) found in {list(map(str, paths))}")
    for f in files:
        check_nifti_header(f)
    from monai.transforms import (
        Compose,
        CropForeground,
        EnsureChannelFirst,
        LoadImage,
        Orientation,
        Resize,
        ScaleIntensityRangePercentiles,
    )

    load = Compose(
        [
            LoadImage(image_only=True),
            EnsureChannelFirst(),
            Orientation(axcodes="RAS"),
            ScaleIntensityRangePercentiles(percentiles[0], percentiles[1], 0.0, 1.0, clip=True),
            CropForeground(select_fn=lambda v: v > 0.08, margin=2),
        ]
    )
    out = []
    for f in files:
        try:
            v = load(str(f))
        except Exception as exc:  # noqa: BLE001 - MONAI wraps every reader failure in a RuntimeError
            cause = exc.__cause__ or exc
            raise FileFormatError(
                f"{f}: not a readable training volume ({type(cause).__name__}: {cause})"
            ) from exc
        if v.ndim != 4 or min(v.shape[1:]) < 1:
            raise InputDataError(f"{f}: expected a 3-D volume, found shape {tuple(v.shape[1:])}")
        side = max(v.shape[1:])
        v = torch.nn.functional.pad(torch.as_tensor(v), _cube_pad(v.shape[1:], side))
        v = Resize((size, size, size), mode="trilinear", anti_aliasing=True)(v)
        out.append(volume_slices(np.asarray(v[0], dtype=np.float32).clip(0, 1), axes, min_mean))
    return np.concatenate(out, 0)


def _cube_pad(shape, side):
    pads = []
    for n in reversed(list(shape)):
        d = side - n
        pads += [d // 2, d - d // 2]
    return pads


# ----------------------------------------------------------------------------------- helpers
def build_prior(cfg: TrainConfig, network=None, shape=None) -> DiffusionPrior:
    net = network if network is not None else build_network(cfg.architecture)
    return DiffusionPrior(
        net,
        schedule_from_config(cfg.schedule),
        cfg.parameterisation,
        cfg.time_input,
        cfg.data_scale,
        cfg.data_shift,
        image_shape=shape or (1, cfg.image_size, cfg.image_size),
        config={
            "architecture": cfg.architecture,
            "data_description": cfg.data_description,
            "data_range": [0.0, 1.0],
            **conventions_config(cfg),
        },
    )


def conventions_config(cfg: TrainConfig) -> dict:
    """The prior-config entries (``data_orientation``, ``data_intensity``, ``data_framing``) that the training
    config records; :func:`~diffrecon.priors.checkpoint.save_prior` writes them to the JSON's ``data``."""
    return {f"data_{k}": getattr(cfg, f"data_{k}") for k in ("orientation", "intensity", "framing")
            if getattr(cfg, f"data_{k}", None) is not None}


def sample_times(prior: DiffusionPrior, cfg: TrainConfig, b: int, g: torch.Generator) -> torch.Tensor:
    t = prior.schedule.sample_t(b, generator=g)
    if prior.schedule.discrete and cfg.low_t_frac > 0:
        n_low = int(round(b * cfg.low_t_frac))
        t[:n_low] = torch.randint(0, min(cfg.low_t_max, prior.schedule.num_steps), (n_low,), generator=g)
    return t


@torch.no_grad()
def validate(prior: DiffusionPrior, x: torch.Tensor, levels, seed: int = 0, chunk: int = 64) -> list[dict]:
    """Denoising PSNR at input-PSNR ``levels`` (dB) on clean slices ``x`` (N, 1, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    dev = next(prior.parameters()).device
    out = []
    for p in levels:
        ratio = abs(prior.data_scale) * 10 ** (-p / 20)
        t = prior.schedule.t_from_noise_to_signal(ratio)
        ins, outs = [], []
        for i in range(0, x.shape[0], chunk):
            xb = x[i : i + chunk].to(dev).float()
            z0 = prior.normalise(xb)
            n = torch.randn(z0.shape, generator=g).to(dev)
            tt = torch.full((xb.shape[0],), t, device=dev)
            xt = prior.add_noise(z0, n, tt)
            a, _ = prior.alpha_sigma(tt, xt)
            ins.append(prior.denormalise(xt / a).cpu())
            outs.append(prior.denormalise(prior.x0(xt, tt)).clamp(0, 1).cpu())
        xin, xout = torch.cat(ins), torch.cat(outs)
        out.append(
            {
                "noise_level": p,
                "t": t if isinstance(t, int) else float(t),
                "input_psnr": psnr(xin, x.cpu(), data_range=1.0),
                "output_psnr": psnr(xout, x.cpu(), data_range=1.0),
            }
        )
    return out


class _Logger:
    def __init__(self, run: pathlib.Path, enabled: bool):
        self.path, self.enabled = run / "log.jsonl", enabled

    def __call__(self, **rec):
        if not self.enabled:
            return
        rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def _seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """Deterministic per-(seed, step, rank, stream) generator seed (no Python hash randomisation)."""
    return ((seed * 1_000_003 + step) * 64 + rank) * 4 + stream


def _dist_info():
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return ws, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


# ----------------------------------------------------------------------------------- main loop
def train(
    cfg: TrainConfig,
    source: SliceSource,
    run_dir: str | os.PathLike,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    time_limit_s: float | None = None,
    export: str | os.PathLike | None = None,
    rescan_every: int = 500,
    print_fn=print,
) -> dict:
    """Train a slice prior (``cfg.kind`` "diffusion" or "latent"); returns the final info dict.

    Stops after ``cfg.steps`` iterations in total or ``time_limit_s`` seconds of this call, always
    writing the training state first. ``export`` additionally writes the EMA prior there.
    """
    run = pathlib.Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ws, rank, local_rank = _dist_info()
    if cfg.mixed_precision and not str(device).startswith("cuda"):
        raise DiffreconError("--mixed-precision needs a CUDA device; training on CPU runs in float32")
    if ws > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        if str(device).startswith("cuda"):
            device = f"cuda:{local_rank}"
    is_main = rank == 0
    log = _Logger(run, is_main)
    if cfg.kind == "latent":
        return _train_latent(
            cfg, source, run, resume, device, progress, time_limit_s, export, log, is_main, print_fn
        )
    prior = build_prior(cfg).to(device)
    return _train_diffusion(
        cfg,
        prior,
        source,
        run,
        resume,
        device,
        progress,
        time_limit_s,
        export,
        log,
        is_main,
        print_fn,
        rescan_every,
        stage="diffusion",
    )


def _train_diffusion(
    cfg,
    prior,
    source,
    run,
    resume,
    device,
    progress,
    time_limit_s,
    export,
    log,
    is_main,
    print_fn,
    rescan_every,
    stage,
    encode=None,
    wrap_export=None,
):
    ws, rank, _ = _dist_info()
    model = prior.network
    ddp = model
    if ws > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    prefix = "state" if stage == "diffusion" else f"{stage}_state"
    step = 0
    info = {"config": asdict(cfg), "stage": stage}
    if resume and (run / f"{prefix}.json").exists():
        old = load_training_state(run, model, ema, opt, prefix=prefix)
        step = int(old.get("step", 0))
        info["history"] = old.get("history", [])
        if is_main:
            print_fn(f"resumed {stage} from step {step} ({run}/{prefix}.json)")
    info.setdefault("history", [])
    live = model.state_dict()
    floating = [k for k, v in live.items() if torch.is_floating_point(v)]
    others = [k for k, v in live.items() if not torch.is_floating_point(v)]
    ema_float, live_float = [ema[k] for k in floating], [live[k] for k in floating]
    ema_other, live_other = [ema[k] for k in others], [live[k] for k in others]
    val_x = source.val if source.val.shape[0] else source.train[:64]
    if encode is not None:
        with torch.no_grad():
            val_x = encode(val_x.float())
    eval_prior = copy.deepcopy(prior).eval()
    scaler = torch.amp.GradScaler("cuda") if cfg.mixed_precision else None
    t_start = time.time()
    last_ckpt = time.time()
    losses = []
    keep_losses = max(cfg.val_every or 0, cfg.log_every, 50)
    pbar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        pbar = tqdm(
            total=cfg.steps, initial=step, desc=f"train-prior[{stage}]", mininterval=10, dynamic_ncols=True
        )

    def checkpoint(final=False):
        info["step"] = step
        info["seconds"] = info.get("seconds", 0.0)
        if not is_main:
            return
        save_training_state(run, model, ema, opt, info, prefix=prefix)
        eval_prior.network.load_state_dict(ema)
        target = wrap_export(eval_prior) if wrap_export else eval_prior
        target.config["training"] = training_record(cfg, step, info.get("train_seconds", 0.0),
                                                    info["history"], ws)
        if wrap_export is None:
            save_prior(target, run / "ema_prior", overwrite=True)  # the run's own rolling checkpoint
            if export and final:
                save_prior(target, export, overwrite=True)  # the CLI refuses an existing one up front

    prev_time = info.get("train_seconds", 0.0) if resume else 0.0
    try:
        old_secs = (
            json.loads((run / f"{prefix}.json").read_text()).get("train_seconds", 0.0)
            if resume and (run / f"{prefix}.json").exists()
            else 0.0
        )
    except Exception:  # noqa: BLE001
        old_secs = prev_time
    stop = {"flag": False}
    if is_main:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():

            def _on_term(signum, frame):  # checkpoint and exit cleanly on SIGTERM/SIGINT
                stop["flag"] = True

            signal.signal(signal.SIGTERM, _on_term)
    while step < cfg.steps:
        if rescan_every and step % rescan_every == 0 and source.rescan() and is_main:
            print_fn(f"step {step}: training on {source.train.shape[0]} slices")
        g = torch.Generator().manual_seed(_seed(cfg.seed, step, rank))
        x = source.batch(cfg.batch_size, g)
        if cfg.augment and encode is None:
            x = augment_batch(x, g)
        x = x.to(device)
        z0 = encode(x) if encode is not None else prior.normalise(x)
        t = sample_times(prior, cfg, z0.shape[0], g).to(device)
        noise = torch.randn(z0.shape, generator=g).to(device)
        xt = prior.add_noise(z0, noise, t)
        target = prior.target(z0, noise, t)
        lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        for grp in opt.param_groups:
            grp["lr"] = lr
        with torch.autocast("cuda", enabled=bool(scaler)):
            out = ddp(xt, prior.time_condition(t, xt))
            loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_float, live_float, ema_other, live_other, decay)
        # losses stay on the device between log events: no host synchronisation per step
        losses.append(loss.detach())
        info["train_seconds"] = old_secs + (time.time() - t_start)
        if pbar is not None:
            pbar.update(1)
        if step % cfg.log_every == 0:
            losses = [float(v) for v in losses[-keep_losses:]]
            if pbar is not None:
                pbar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            log(
                event="train",
                stage=stage,
                step=step,
                loss=float(np.mean(losses[-cfg.log_every :])),
                lr=lr,
                grad_norm=float(gn),
                seconds=round(info["train_seconds"], 1),
            )
        if is_main and cfg.val_every and step % cfg.val_every == 0:
            eval_prior.network.load_state_dict(ema)
            res = validate(eval_prior, val_x, cfg.val_levels) if encode is None else []
            losses = [float(v) for v in losses[-keep_losses:]]
            rec = {
                "step": step,
                "seconds": round(info["train_seconds"], 1),
                "loss": float(np.mean(losses[-cfg.val_every :])),
                "val": res,
            }
            info["history"].append(rec)
            log(event="val", stage=stage, **rec)
            if res:
                txt = ", ".join(f"{r['input_psnr']:.1f}→{r['output_psnr']:.1f}" for r in res)
                print_fn(
                    f"[val step {step}] loss {rec['loss']:.4f}; denoising PSNR dB (input→Tweedie): {txt}"
                )
        out_of_time = (time_limit_s is not None and time.time() - t_start > time_limit_s) or stop["flag"]
        if time.time() - last_ckpt > cfg.ckpt_minutes * 60 or out_of_time:
            checkpoint()
            last_ckpt = time.time()
        if out_of_time:
            if is_main:
                print_fn(f"time limit reached at step {step}; state saved in {run} (resume with --resume)")
            break
    checkpoint(final=True)
    if pbar is not None:
        pbar.close()
    info["step"] = step
    info["final_loss"] = float(np.mean([float(v) for v in losses[-50:]])) if losses else None
    return info


def training_record(cfg: TrainConfig, step: int, seconds: float, history: list, world_size: int = 1) -> dict:
    """The ``training`` entry of an exported prior's config (steps, seconds, global batch, lr, validation)."""
    return {
        "steps": step,
        "seconds": round(seconds, 1),
        "batch_size": cfg.batch_size * world_size,
        "lr": cfg.lr,
        "last_validation": history[-1] if history else None,
    }


@torch.no_grad()
def _ema_update(ema_float, live_float, ema_other, live_other, decay: float) -> None:
    """``ema ← decay·ema + (1 − decay)·live`` for floating tensors (one fused call), copy the rest."""
    if ema_float:
        torch._foreach_lerp_(ema_float, live_float, 1.0 - decay)
    for e, v in zip(ema_other, live_other, strict=True):
        e.copy_(v)


def _train_latent(cfg, source, run, resume, device, progress, time_limit_s, export, log, is_main, print_fn):
    """Stage 1: AutoencoderKL (MSE + KL); stage 2: diffusion on scale_factor-normalised latents."""
    from .checkpoint import load_safetensors, load_state_dict_strict, save_safetensors

    if cfg.ae_architecture is None:
        raise InputDataError("a latent prior needs ae_architecture (an AutoencoderKL config)")
    ae = build_network(cfg.ae_architecture).to(device)
    ae_file = run / "autoencoder.safetensors"
    meta_file = run / "autoencoder.json"
    if resume and ae_file.exists() and meta_file.exists():
        load_state_dict_strict(ae, load_safetensors(ae_file), str(ae_file))
        scale_factor = json.loads(meta_file.read_text())["scale_factor"]
        if is_main:
            print_fn(f"resumed latent training: autoencoder loaded from {ae_file}")
    else:
        opt = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr)
        t0 = time.time()
        for step in range(cfg.ae_steps):
            g = torch.Generator().manual_seed(_seed(cfg.seed, step, 0, stream=1))
            x = source.batch(cfg.batch_size, g).to(device) * cfg.data_scale + cfg.data_shift
            recon, mu, sigma = ae(x)
            kl = 0.5 * (mu**2 + sigma**2 - torch.log(sigma**2 + 1e-12) - 1).mean()
            loss = F.mse_loss(recon, x) + cfg.ae_kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.parameters(), cfg.grad_clip)
            opt.step()
            if (step + 1) % cfg.log_every == 0:
                log(
                    event="train",
                    stage="autoencoder",
                    step=step + 1,
                    loss=float(loss),
                    seconds=round(time.time() - t0, 1),
                )
            if time_limit_s is not None and time.time() - t0 > time_limit_s / 2:
                break
        ae.eval()
        with torch.no_grad():
            xs = source.train[:256].float().to(device) * cfg.data_scale + cfg.data_shift
            mu, _ = ae.encode(xs)
            scale_factor = float(1.0 / mu.std().clamp_min(1e-6))
            rec = ae.decode(mu)
            ae_psnr = psnr((rec - cfg.data_shift) / cfg.data_scale, (xs - cfg.data_shift) / cfg.data_scale,
                           data_range=1.0)
        if is_main:
            save_safetensors(ae.state_dict(), ae_file)
            meta_file.write_text(json.dumps({"scale_factor": scale_factor, "recon_psnr": ae_psnr}))
            print_fn(
                f"autoencoder stage done: reconstruction PSNR {ae_psnr:.2f} dB, "
                f"scale_factor {scale_factor:.4f}"
            )
            log(event="autoencoder_done", recon_psnr=ae_psnr, scale_factor=scale_factor)
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        lat = ae.encode(source.train[:1].float().to(device))[0]
    lshape = tuple(lat.shape[1:])
    dcfg = copy.deepcopy(cfg)
    dcfg.data_scale, dcfg.data_shift = 1.0, 0.0
    diff = build_prior(dcfg, shape=lshape).to(device)

    def encode(x):
        with torch.no_grad():
            return ae.encode(x * cfg.data_scale + cfg.data_shift)[0] * scale_factor

    def wrap(d):
        lp = LatentPrior(
            ae,
            d,
            scale_factor,
            cfg.data_scale,
            cfg.data_shift,
            image_shape=(1, cfg.image_size, cfg.image_size),
            config={
                "autoencoder_architecture": cfg.ae_architecture,
                "data_description": cfg.data_description,
                **conventions_config(cfg),
            },
        )
        save_prior(lp, run / "ema_prior", overwrite=True)
        if export:
            save_prior(lp, export, overwrite=True)
        return d

    info = _train_diffusion(
        cfg,
        diff,
        source,
        run,
        resume,
        device,
        progress,
        time_limit_s,
        export,
        log,
        is_main,
        print_fn,
        0,
        stage="latent",
        encode=encode,
        wrap_export=wrap,
    )
    info["scale_factor"] = scale_factor
    return info


def ae_config(channels=(32, 64), latent_channels=2, num_res_blocks=1, norm_num_groups=16) -> dict:
    """Architecture dict for a small 2D MONAI ``AutoencoderKL`` (no attention)."""
    return {
        "type": "monai.AutoencoderKL",
        "kwargs": {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": list(channels),
            "latent_channels": latent_channels,
            "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups,
            "attention_levels": [False] * len(channels),
            "with_encoder_nonlocal_attn": False,
            "with_decoder_nonlocal_attn": False,
        },
    }
