"""``diffrecon reconstruct --method dds|diffusion_mbir``: the diffusion solvers on a user's measurements
(CT or MRI); ``mbir`` is an accepted alias of ``diffusion_mbir``."""

from __future__ import annotations

DIFFUSION_METHODS = ("dds", "diffusion_mbir")


def add_arguments(parser) -> None:
    g = parser.add_argument_group("diffusion (--method dds|diffusion_mbir)")
    g.add_argument("--prior", default="head-64",
                   help="bundled prior name (default head-64), diffrecon checkpoint (STEM, .json or "
                        ".safetensors), local diffusers folder (unet/ + scheduler/), or .pth/.pt/.ckpt state "
                        "dict with --architecture (see docs/priors.md)")
    g.add_argument("--architecture", default=None, metavar="FILE.json",
                   help="prior description of a .pth/.pt/.ckpt --prior (architecture, schedule, "
                        "parameterisation, data); default <stem>.json beside it")
    g.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the paper's, DDS 50, DiffusionMBIR 2000; NFE = steps for "
                        "DDS; DiffusionMBIR CT below 2000 steps scales lambda, rho by its step-count rule "
                        "and runs predictor-only with a VP prior, NFE = steps, else 2 x steps - 1)")
    g.add_argument("--paper", action="store_true",
                   help="the published CT settings (DDS.paper_ct / DiffusionMBIR.paper_ct) instead of "
                        "diffrecon's defaults (DDS rho x 0.1; DiffusionMBIR lambda, rho for the step count); "
                        "MRI always uses the paper presets")
    g.add_argument("--seed", type=int, default=0, help="sampler seed (same seed, same output)")
    g.add_argument("--image-scale", default="1",
                   help="image value at the top of the prior's range (the head prior: the 99.9th-percentile "
                        "intensity); a number, or 'auto' = 99.9th percentile of the FBP / zero-filled image "
                        "(default 1: volumes scaled like the sample volume)")
    g.add_argument("--chunk-size", type=int, default=16, help="slices per network call (default 16)")
    g.add_argument("--save-state", default=None,
                   help="write the sampler state here (every --save-every steps)")
    g.add_argument("--save-every", type=int, default=5, help="steps between state writes (default 5)")
    g.add_argument("--resume", default=None, help="continue an interrupted run from this state file")


def image_scale(spec: str, rough_image) -> float:
    """``--image-scale``: a positive number, or ``auto`` (99.9th percentile of a rough reconstruction)."""
    import torch

    from ..errors import InputDataError

    if spec == "auto":
        v = rough_image.detach().abs().float().flatten().cpu()
        q = float(torch.quantile(v[:: max(1, v.numel() // 1_000_000)], 0.999))
        if not q > 0:
            raise InputDataError("--image-scale auto: the rough reconstruction is zero; give a number")
        return q
    try:
        value = float(spec)
    except ValueError:
        raise InputDataError(f"--image-scale: expected a positive number or 'auto', found {spec!r}") from None
    if not value > 0:
        raise InputDataError(f"--image-scale: expected a positive number, found {value}")
    return value


def _check_state_path(args) -> None:
    """``--save-state`` must not be OUTPUT or its record, and replaces an existing file only with
    ``--overwrite`` or when it is the file being resumed (the usual ``--resume F --save-state F``)."""
    import pathlib

    from ..errors import InputDataError, OutputExistsError
    from ._common import record_path

    if not args.save_state:
        return
    state = pathlib.Path(args.save_state).resolve()
    outputs = {pathlib.Path(args.output).resolve(), record_path(args.output).resolve()}
    if state in outputs:
        raise InputDataError(f"--save-state {args.save_state}: that is the output (or its record)")
    resuming_it = args.resume is not None and pathlib.Path(args.resume).resolve() == state
    if state.exists() and not (resuming_it or getattr(args, "overwrite", False)):
        raise OutputExistsError(
            f"--save-state {args.save_state} already exists; --resume it, or pass --overwrite to replace it"
        )


def prepare(args, device, plane_shape):
    """Fail fast, before any expensive work: load the prior, check its image size against the data's
    slices ``plane_shape`` (H, W) and parse ``--image-scale``. Returns the prior."""
    from ..errors import InputDataError
    from ..priors import load

    _check_state_path(args)
    prior = load(args.prior, device=device, architecture=getattr(args, "architecture", None))
    ishape = getattr(prior, "image_shape", None)
    if ishape is not None and tuple(ishape[-2:]) != tuple(plane_shape):
        raise InputDataError(
            f"--prior {args.prior}: the prior was trained on {ishape[-2]}x{ishape[-1]} slices but the data's "
            f"slices are {plane_shape[0]}x{plane_shape[1]}; resample the data or use a prior of that size"
        )
    if args.image_scale != "auto":
        image_scale(args.image_scale, None)
    return prior


def _ct_preset_args(geometry) -> dict:
    """``paper_ct`` arguments for a CT geometry: the view count, and the limited-angle weights when the
    views span clearly less than the half turn a parallel-beam scan needs."""
    import math
    import sys

    import numpy as np

    angles = np.sort(np.asarray(geometry.angles, dtype=np.float64))
    n = len(angles)
    step = float(np.median(np.diff(angles))) if n > 1 else 0.0
    span = float(angles[-1] - angles[0]) + step
    out = {"n_views": n}
    if geometry.kind == "parallel" and n > 1 and span < 0.9 * math.pi:
        out["limited_angle"] = True
    if geometry.kind != "parallel":
        print(f"note: the paper's lambda, rho were tuned for parallel-beam CT; with a {geometry.kind}-beam "
              "geometry consider --lam/--rho", file=sys.stderr)
    return out


def _check_mbir_paper_steps(args, kw: dict) -> None:
    """``--paper`` DiffusionMBIR below the paper's 2000 steps without ``--lam``/``--rho``: refused, since
    the published λ, ρ lock early noise in or diverge with fewer steps (docs/diffusion-mbir-dds.md)."""
    from ..errors import InputDataError
    from ..recon.defaults import mbir_weight_multiplier

    steps = kw.get("steps", 2000)
    if args.paper and steps < 2000 and "lam" not in kw and "rho" not in kw:
        m = mbir_weight_multiplier(steps)
        raise InputDataError(
            f"--paper with --steps {steps}: the paper's lambda, rho belong to 2000 steps and with {steps} "
            f"they lock the early noise in or diverge; drop --paper (lambda, rho x {m:.3g} by the "
            "step-count rule) or give --lam and --rho"
        )


def solve(args, prior, y, operator, modality: str, geometry=None, rough_image=None):
    """Build the solver (diffrecon's default CT preset, or the paper's with ``--paper``; the paper's for MRI),
    run it and return ``(volume, record)``.

    ``operator`` maps the volume (its layout is the output's) to ``y``; ``geometry`` (CT) picks the
    sparse-view or limited-angle preset; ``rough_image`` (FBP or zero-filled) is only used by
    ``--image-scale auto``. ``--lam``/``--rho``/``--cg-iters`` override the preset's values (λ, ρ in the
    units of ½‖Ax − y‖² with the exact adjoint).
    """
    from ..errors import InputDataError
    from ..recon import DDS, DiffusionMBIR
    from ._common import canonical_method

    scale = image_scale(args.image_scale, rough_image)
    method = canonical_method(args.method)
    if method not in DIFFUSION_METHODS:
        raise InputDataError(f"--method {args.method}: not a diffusion method {DIFFUSION_METHODS}")
    cls = DDS if method == "dds" else DiffusionMBIR
    kw = dict(seed=int(args.seed), image_scale=scale, chunk_size=int(args.chunk_size),
              progress=not args.quiet)
    for opt, key in (("steps", "steps"), ("lam", "lam"), ("rho", "rho"), ("cg_iters", "cg_iter")):
        if getattr(args, opt, None) is not None:
            kw[key] = getattr(args, opt)
    if getattr(args, "iters", None) is not None:
        raise InputDataError("--iters sets ADMM-TV iterations; the diffusion methods take --steps")
    if modality == "ct":
        preset = _ct_preset_args(geometry)
        if cls is DiffusionMBIR:
            preset.pop("limited_angle", None)
            _check_mbir_paper_steps(args, kw)
            if not args.paper:
                kw.setdefault("steps", 2000)
        solver = (cls.paper_ct if args.paper else cls.default_ct)(prior, **preset, **kw)
    else:
        solver = cls.paper_mri(prior, **kw)
    x, rec = solver(y, operator, save_state=args.save_state, save_every=int(args.save_every),
                    resume=args.resume)
    return x, {"prior": str(args.prior), "image_scale": scale, "solver": rec.to_dict()}
