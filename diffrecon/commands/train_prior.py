"""``diffrecon train-prior``: train a 2D slice diffusion prior (or a small latent prior).

Examples::

    # from NIfTI volumes (MONAI pipeline: RAS, percentile scaling, crop, cube, resize, slices on 3 axes)
    diffrecon train-prior --data vols/ --out runs/mine --steps 20000
    # from a precomputed slice bank (python -m diffrecon.datasets.bank), resumable, exporting the EMA prior
    diffrecon train-prior --bank runs/bank-head64 --out runs/head64 --export diffrecon/priors/weights/head-64
    diffrecon train-prior --out runs/head64 --resume --steps 40000
    # multi-process (DDP): torchrun --nproc-per-node 2 -m diffrecon.cli train-prior ...
"""

from __future__ import annotations

import json
import math
import pathlib


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-prior",
        help="train a 2D slice diffusion prior (denoising score matching)",
        description=__doc__.split("Examples")[0].strip(),
    )
    src = p.add_argument_group("data")
    src.add_argument("--data", nargs="+", help="NIfTI files or folders of them (training volumes)")
    src.add_argument(
        "--bank", help="folder of precomputed slice shards (shard-*.npy), re-scanned while training"
    )
    src.add_argument(
        "--val-data",
        nargs="+",
        help="NIfTI files/folders or a bank for validation (default: held-out slices of the training data)",
    )
    src.add_argument(
        "--val-slices",
        type=int,
        default=None,
        help="held-out validation slices (default 96; resume: as before)",
    )
    src.add_argument("--axes", type=int, nargs="+", default=[0, 1, 2], help="slice axes of the volumes")
    src.add_argument("--image-size", type=int, default=64)
    src.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=[0.0, 99.9],
        metavar=("LO", "HI"),
        help="intensity normalisation: percentiles mapped to 0 and 1 (clipped)",
    )
    src.add_argument(
        "--description", default="", help="free text describing the training data (stored in the JSON)"
    )
    m = p.add_argument_group("model")
    m.add_argument("--kind", choices=["diffusion", "latent"], default="diffusion")
    m.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    m.add_argument(
        "--attention", type=int, nargs="+", help="1/0 per level (default: attention at the lowest level)"
    )
    m.add_argument("--res-blocks", type=int, default=1)
    m.add_argument("--head-channels", type=int, default=32)
    m.add_argument("--norm-groups", type=int, default=16)
    m.add_argument("--schedule", choices=["linear", "cosine", "ve"], default="linear")
    m.add_argument("--timesteps", type=int, default=1000, help="number of discrete steps T")
    m.add_argument("--beta-start", type=float, default=1e-4)
    m.add_argument("--beta-end", type=float, default=0.02)
    m.add_argument("--sigma-min", type=float, default=0.01)
    m.add_argument("--sigma-max", type=float, default=50.0)
    m.add_argument("--parameterisation", choices=["eps", "x0", "v", "score"], default="v")
    m.add_argument(
        "--ae-channels", type=int, nargs="+", default=[32, 64], help="latent kind: AutoencoderKL channels"
    )
    m.add_argument("--latent-channels", type=int, default=2)
    m.add_argument("--ae-steps", type=int, default=2000)
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--steps",
        type=int,
        default=None,
        help="total iterations (default 100000; with --resume: the new total)",
    )
    o.add_argument("--time-limit", type=float, help="stop (saving state) after this many minutes")
    o.add_argument("--batch-size", type=int, default=None, help="per process (default 16)")
    o.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4)")
    o.add_argument("--warmup", type=int, default=200)
    o.add_argument("--ema-decay", type=float, default=None, help="default 0.999")
    o.add_argument("--grad-clip", type=float, default=1.0)
    o.add_argument(
        "--low-t-frac",
        type=float,
        default=None,
        help="fraction of each batch drawn from t < --low-t-max (default 0.5)",
    )
    o.add_argument("--low-t-max", type=int, default=250)
    o.add_argument("--no-augment", action="store_true")
    o.add_argument("--mixed-precision", action="store_true", help="CUDA autocast + GradScaler (CUDA only)")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder (state, EMA prior, log.jsonl)")
    r.add_argument("--resume", action="store_true", help="continue from the state in --out (its config wins)")
    r.add_argument(
        "--export", help="also write the final EMA prior to this stem (e.g. diffrecon/priors/weights/head-64)"
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that holds one, and replace an existing --export prior",
    )
    r.add_argument("--val-every", type=int, default=None, help="default 250")
    r.add_argument("--log-every", type=int, default=None, help="default 25")
    r.add_argument("--ckpt-minutes", type=float, default=None, help="default 5")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


# options that may be changed when resuming (everything else comes from the stored config)
OVERRIDABLE = (
    "steps",
    "batch_size",
    "lr",
    "ema_decay",
    "low_t_frac",
    "val_every",
    "log_every",
    "ckpt_minutes",
)


def _or(value, default):
    return default if value is None else value


def _config(args):
    from ..priors.networks import unet_config
    from ..priors.train import TrainConfig, ae_config

    if args.schedule == "ve":
        sched = {
            "type": "ve",
            "sigma_min": args.sigma_min,
            "sigma_max": args.sigma_max,
            "num_steps": args.timesteps,
        }
        time_input = (
            "t1000"  # continuous t in [0, 1] scaled to the 0..1000 range of the UNet's time embedding
        )
    elif args.schedule == "cosine":
        sched = {"type": "vp", "beta_schedule": "cosine", "num_steps": args.timesteps}
        time_input = "index"
    else:
        sched = {
            "type": "vp",
            "beta_schedule": "linear",
            "num_steps": args.timesteps,
            "beta_start": args.beta_start,
            "beta_end": args.beta_end,
        }
        time_input = "index"
    att = [bool(a) for a in args.attention] if args.attention else None
    return TrainConfig(
        kind=args.kind,
        image_size=args.image_size,
        architecture=unet_config(
            args.channels,
            att,
            args.res_blocks,
            args.head_channels,
            args.norm_groups,
            in_channels=args.latent_channels if args.kind == "latent" else 1,
            out_channels=args.latent_channels if args.kind == "latent" else 1,
        ),
        schedule=sched,
        parameterisation=args.parameterisation,
        time_input=time_input,
        batch_size=_or(args.batch_size, 16),
        lr=_or(args.lr, 5e-4),
        warmup=args.warmup,
        steps=_or(args.steps, 100000),
        grad_clip=args.grad_clip,
        ema_decay=_or(args.ema_decay, 0.999),
        low_t_frac=_or(args.low_t_frac, 0.5),
        low_t_max=args.low_t_max,
        augment=not args.no_augment,
        val_every=_or(args.val_every, 250),
        log_every=_or(args.log_every, 25),
        ckpt_minutes=_or(args.ckpt_minutes, 5.0),
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        data_description=args.description,
        ae_architecture=ae_config(args.ae_channels, args.latent_channels) if args.kind == "latent" else None,
        ae_steps=args.ae_steps,
    )


def _check_outputs(out: pathlib.Path, args) -> None:
    """Refuse, before any work, to replace a training run or an exported prior without ``--overwrite``."""
    from ..errors import OutputExistsError

    if not args.resume and not args.overwrite and (out / "state.json").exists():
        raise OutputExistsError(
            f"{out} holds a training run; --resume continues it, --overwrite starts again from step 0"
        )
    if args.export and not args.overwrite:
        for suffix in (".safetensors", ".json"):
            target = pathlib.Path(f"{args.export}{suffix}")
            if target.exists():
                raise OutputExistsError(f"--export: {target} already exists; pass --overwrite to replace it")


# (option, test, what is expected): checked on the options given (None = left to the default / resume)
_CHECKS = (
    ("steps", lambda v: v >= 1, "a number of iterations >= 1"),
    ("batch_size", lambda v: v >= 1, "a batch size >= 1"),
    ("image_size", lambda v: v >= 1, "a slice size >= 1 pixel"),
    ("lr", lambda v: math.isfinite(v) and v > 0, "a finite learning rate > 0"),
    ("timesteps", lambda v: v >= 1, "a number of diffusion steps >= 1"),
    ("ema_decay", lambda v: 0 <= v < 1, "an EMA decay in [0, 1)"),
    ("val_slices", lambda v: v >= 0, "a number of slices >= 0"),
    ("threads", lambda v: v >= 1, "a thread count >= 1"),
    ("time_limit", lambda v: math.isfinite(v) and v > 0, "a finite number of minutes > 0"),
    ("warmup", lambda v: v >= 0, "a number of iterations >= 0"),
    ("grad_clip", lambda v: math.isfinite(v) and v > 0, "a finite gradient norm > 0"),
    ("low_t_frac", lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    ("low_t_max", lambda v: v >= 1, "a step index >= 1"),
    ("val_every", lambda v: v >= 1, "a number of iterations >= 1"),
    ("log_every", lambda v: v >= 1, "a number of iterations >= 1"),
    ("ckpt_minutes", lambda v: math.isfinite(v) and v > 0, "a finite number of minutes > 0"),
    ("res_blocks", lambda v: v >= 1, "a number of blocks >= 1"),
    ("ae_steps", lambda v: v >= 0, "a number of iterations >= 0"),
)


def check_options(args) -> None:
    """Refuse, before any data are read or any folder is made, option values training cannot use
    (counts below 1, non-finite or negative rates, fractions outside [0, 1], percentiles out of order,
    slice axes other than 0, 1, 2, a device that is not cpu or cuda, ``--mixed-precision`` without CUDA):
    they used to start a run that crashed in PyTorch with a traceback, or trained nothing with exit 0."""
    from ..errors import InputDataError
    from ._common import resolve_device

    for name, ok, expected in _CHECKS:
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            raise InputDataError(f"--{name.replace('_', '-')}: expected {expected}, found {value}")
    lo, hi = args.percentiles
    if not (0 <= lo < hi <= 100):
        raise InputDataError(f"--percentiles: expected 0 <= LO < HI <= 100, found {lo:g} {hi:g}")
    if not args.axes or any(a not in (0, 1, 2) for a in args.axes):
        raise InputDataError(f"--axes: expected volume axes among 0 1 2, found {args.axes}")
    if any(c < 1 for c in args.channels) or any(c < 1 for c in args.ae_channels):
        raise InputDataError(f"--channels: expected positive widths, found {args.channels}")
    if not (0 < args.beta_start < args.beta_end < 1):
        raise InputDataError(f"--beta-start/--beta-end: expected 0 < start < end < 1, found "
                             f"{args.beta_start:g}, {args.beta_end:g}")
    if not (0 < args.sigma_min < args.sigma_max and math.isfinite(args.sigma_max)):
        raise InputDataError(f"--sigma-min/--sigma-max: expected 0 < min < max, found "
                             f"{args.sigma_min:g}, {args.sigma_max:g}")
    device = resolve_device(args.device)
    if args.mixed_precision and device.type != "cuda":
        raise InputDataError("--mixed-precision needs a CUDA device (--device cuda); on CPU training runs in "
                             "float32")
    args.device = str(device)


def data_conventions(bank, args) -> dict:
    """How the training slices were made (``orientation``, ``intensity``, ``framing``), for the prior's JSON:
    ``--data`` volumes go through the MONAI pipeline (:func:`~diffrecon.datasets.framing.nifti_conventions`
    of ``--axes`` and ``--percentiles``); a ``--bank`` records its own in ``bank.json`` (keys
    ``orientation``, ``intensity``, ``framing``), else one written by ``diffrecon.datasets.bank`` gets the
    head banks' (:func:`~diffrecon.datasets.framing.head_conventions`) and any other bank none."""
    from ..datasets.framing import head_conventions, nifti_conventions

    if not bank:
        return nifti_conventions(tuple(args.axes), tuple(args.percentiles))
    meta_file = pathlib.Path(bank) / "bank.json"
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except (OSError, ValueError):
        meta = {}
    own = {k: meta[k] for k in ("orientation", "intensity", "framing") if isinstance(meta.get(k), dict)}
    if own:
        return own
    if "diffrecon.datasets.synth" in str(meta.get("source", "")):
        return head_conventions()
    return {}


def run(args) -> int:
    import numpy as np
    import torch

    from ..errors import InputDataError
    from ..priors.train import SliceSource, TrainConfig, _shuffled, slices_from_nifti, train

    check_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputDataError(f"--out {out}: that is a file; the run folder must be a folder (or not exist)")
    _check_outputs(out, args)
    from ..io.atomic import check_writable

    check_writable(out / "state.json", overwrite=True)  # a read-only place fails now, not after loading
    if args.export:
        check_writable(f"{args.export}.json", overwrite=True)
    if args.resume and (out / "state.json").exists():
        saved = json.loads((out / "state.json").read_text())["config"]
        cfg = TrainConfig(**saved)
        for k in OVERRIDABLE:
            if getattr(args, k) is not None:
                setattr(cfg, k, getattr(args, k))
    else:
        cfg = _config(args)
    bank = args.bank
    if bank is None and not args.data and args.resume and (out / "data.json").exists():
        d = json.loads((out / "data.json").read_text())
        bank, args.data = d.get("bank"), d.get("data")
        if args.val_slices is None and not args.val_data:
            args.val_slices = d.get("val_slices")
    if args.val_slices is None:
        args.val_slices = 96
    if bank:
        from ..datasets.bank import load_bank

        slices = _shuffled(load_bank(bank))
    elif args.data:
        slices = _shuffled(
            slices_from_nifti(args.data, cfg.image_size, tuple(args.axes), percentiles=args.percentiles)
        )
    else:
        raise InputDataError("give --data (NIfTI files/folders) or --bank (slice shards)")
    for key, value in data_conventions(bank, args).items():  # recorded in the prior's JSON (data.<key>)
        if getattr(cfg, f"data_{key}", None) is None:
            setattr(cfg, f"data_{key}", value)
    holdout = 0 if args.val_data else min(args.val_slices, max(1, slices.shape[0] // 10))
    source = SliceSource(slices, bank_dir=bank, holdout=holdout)
    if bank:
        source._nshards = sum(1 for _ in pathlib.Path(bank).glob("shard-*.npy"))
    if args.val_data:
        v = args.val_data
        if len(v) == 1 and pathlib.Path(v[0]).is_dir() and any(pathlib.Path(v[0]).glob("shard-*.npy")):
            from ..datasets.bank import load_bank

            val = load_bank(v[0])
        else:
            val = slices_from_nifti(v, cfg.image_size, tuple(args.axes), percentiles=args.percentiles)
        val = _shuffled(val)[: args.val_slices]
        source.val = torch.as_tensor(np.asarray(val, np.float16))[:, None]
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(
        json.dumps(
            {
                "bank": bank,
                "data": args.data,
                "val_data": args.val_data,
                "train_slices": int(source.train.shape[0]),
                "val_slices": int(source.val.shape[0]),
            },
            indent=2,
        )
    )
    print(
        f"train-prior: {source.train.shape[0]} training slices, {source.val.shape[0]} validation slices, "
        f"kind={cfg.kind}, arch={cfg.architecture['kwargs'].get('channels')}, device={args.device}"
    )
    info = train(
        cfg,
        source,
        out,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
        time_limit_s=args.time_limit * 60 if args.time_limit else None,
        export=args.export,
    )
    print(f"train-prior: stopped at step {info['step']}, final loss {info.get('final_loss')}; state in {out}")
    return 0
