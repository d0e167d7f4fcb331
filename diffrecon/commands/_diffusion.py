"""``diffrecon reconstruct --method dds|diffusion_mbir``: the diffusion solvers on a user's measurements
(CT or MRI); ``mbir`` is an accepted alias of ``diffusion_mbir``."""

from __future__ import annotations

DIFFUSION_METHODS = ("dds", "diffusion_mbir")
RESAMPLE = ("auto", "off")
#: an explicit --image-scale this far from the auto estimate (either way) warns
SCALE_WARN_FACTOR = 10.0


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
    g.add_argument("--image-scale", default=None,
                   help="image value at the top of the prior's range (the head prior: the 99.9th-percentile "
                        "intensity); a number, or 'auto' = that percentile of the FBP / zero-filled image "
                        "in the prior's frame (default: auto for priors that record their intensity "
                        "normalisation, as head-64 does; 1 for others); a number far from the auto estimate "
                        "warns")
    g.add_argument("--resample", default="auto", choices=RESAMPLE,
                   help="auto (default): slices of another size than the prior's are framed like its "
                        "training data (head box from the FBP / zero-filled image, padded, resized; the "
                        "operator becomes A o F with F's exact adjoint) and brought into its training "
                        "orientation (data.orientation), the result written on the file's grid; off: refuse "
                        "another size and give the slices as stored")
    g.add_argument("--chunk-size", type=int, default=16, help="slices per network call (default 16)")
    g.add_argument("--save-state", default=None,
                   help="write the sampler state here (every --save-every steps)")
    g.add_argument("--save-every", type=int, default=5, help="steps between state writes (default 5)")
    g.add_argument("--resume", default=None, help="continue an interrupted run from this state file")


def image_scale(spec: str, rough_image, percentile: float = 99.9, framing=None) -> float:
    """``--image-scale``: a positive number, or ``auto`` (the ``percentile`` of a rough reconstruction, over
    the prior's frame when ``framing`` is given; :func:`~diffrecon.datasets.framing.auto_image_scale`)."""
    from ..datasets.framing import auto_image_scale
    from ..errors import InputDataError

    if spec == "auto":
        q = auto_image_scale(rough_image, framing, percentile)
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
    """Fail fast, before any expensive work: load the prior, check the data's slice size ``plane_shape``
    (H, W) against the prior's (refused with ``--resample off`` only; ``auto`` frames them in :func:`solve`),
    resolve the ``--image-scale`` default (``auto`` for a prior that records its intensity normalisation,
    else 1; written back to ``args.image_scale``, so the caller computes its rough image for ``auto``) and
    parse it. Returns the prior."""
    from ..datasets.framing import intensity_percentile
    from ..errors import InputDataError
    from ..priors import load

    _check_state_path(args)
    resample = getattr(args, "resample", "auto")
    if resample not in RESAMPLE:
        raise InputDataError(f"--resample: expected auto or off, found {resample!r}")
    prior = load(args.prior, device=device, architecture=getattr(args, "architecture", None))
    ishape = getattr(prior, "image_shape", None)
    if resample == "off" and ishape is not None and tuple(ishape[-2:]) != tuple(plane_shape):
        raise InputDataError(
            f"--prior {args.prior}: the prior was trained on {ishape[-2]}x{ishape[-1]} slices but the data's "
            f"slices are {plane_shape[0]}x{plane_shape[1]}; drop --resample off (frame them for the prior), "
            "resample the data or use a prior of that size"
        )
    if getattr(args, "image_scale", None) is None:
        args.image_scale = "auto" if intensity_percentile(prior) is not None else "1"
        args.image_scale_default = True
    if args.image_scale != "auto":
        image_scale(args.image_scale, None)
    return prior


def _rough(y, operator, modality: str, geometry, rough_image):
    """The rough reconstruction in the operator's volume layout: ``rough_image`` as the callers give it
    (slice-first, as :func:`~diffrecon.recon.analytic.fbp` and ``zero_filled_rss`` return it), else the
    FBP (CT) or the zero-filled image ``Aᴴy`` (MRI: the orthonormal FFT keeps image units). For CT it is
    zeroed outside the measured support (:func:`~diffrecon.datasets.framing.measured_support`), where a
    sparse-view FBP has only streaks, so they neither widen the head box nor shift the auto scale."""
    from ..datasets.framing import measured_support
    from ..recon.diffusion.skeleton import slice_axis_of

    axis = slice_axis_of(operator)
    if rough_image is None:
        if modality == "ct" and geometry is not None:
            from ..recon.analytic import fbp

            rough_image = fbp(y, geometry)
        else:
            rough_image = operator.adjoint(y)
            axis = 0  # already in the operator's layout
    rough_image = rough_image.real if rough_image.is_complex() else rough_image
    rough_image = rough_image.movedim(0, axis) if axis else rough_image
    if modality == "ct":
        rough_image = rough_image * measured_support(y, operator).to(rough_image.dtype)
    return rough_image


def _scale(args, prior, rough, framing, notes: list) -> tuple[float, str]:
    """The image scale and where it came from; an explicit one far from the auto estimate adds a warning."""
    from ..datasets.framing import auto_image_scale, intensity_percentile

    pct = intensity_percentile(prior)
    spec = args.image_scale if getattr(args, "image_scale", None) is not None else ("auto" if pct else "1")
    defaulted = getattr(args, "image_scale_default", False) or getattr(args, "image_scale", None) is None
    if spec == "auto":
        p = 99.9 if pct is None else pct
        return image_scale("auto", rough, p, framing), f"auto (the {p:g}th percentile of the rough image)"
    value = image_scale(spec, None)
    if defaulted:
        return value, "default 1 (the prior records no intensity normalisation)"
    if pct is not None:
        est = auto_image_scale(rough, framing, pct)
        if est > 0 and not (1 / SCALE_WARN_FACTOR <= value / est <= SCALE_WARN_FACTOR):
            notes.append(
                f"warning: --image-scale {value:g} is {value / est:.3g} x the auto estimate {est:.4g} (the "
                f"{pct:g}th percentile of the rough image, which the prior's training data had at 1); check "
                "it or use --image-scale auto"
            )
    return value, "given"


def _ct_preset_args(geometry) -> dict:
    """``paper_ct`` arguments for a CT geometry: the view count, and the limited-angle weights when the
    views span clearly less than the half turn a parallel-beam scan needs."""
    import logging
    import math

    import numpy as np

    angles = np.sort(np.asarray(geometry.angles, dtype=np.float64))
    n = len(angles)
    step = float(np.median(np.diff(angles))) if n > 1 else 0.0
    span = float(angles[-1] - angles[0]) + step
    out = {"n_views": n}
    if geometry.kind == "parallel" and n > 1 and span < 0.9 * math.pi:
        out["limited_angle"] = True
    if geometry.kind != "parallel":
        logging.getLogger("diffrecon").warning(
            f"the paper's lambda, rho were tuned for parallel-beam CT; with a {geometry.kind}-beam geometry "
            "consider --lam/--rho")
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


def solve(args, prior, y, operator, modality: str, geometry=None, rough_image=None, *, affine=None):
    """Build the solver (diffrecon's default CT preset, or the paper's with ``--paper``; the paper's for MRI),
    run it and return ``(volume, record)``.

    ``operator`` maps the volume (its layout is the output's) to ``y``; ``geometry`` (CT) picks the
    sparse-view or limited-angle preset; ``rough_image`` (FBP or zero-filled, slice-first ``(S, H, W)``;
    computed here when None) gives the ``--image-scale auto`` estimate and the head box; ``affine`` is
    the 4 × 4 voxel → mm affine of the operator's volume layout (None: slices are taken as stored, no
    reorientation). With ``--resample auto`` slices of another size or orientation than the prior's
    are solved in the prior's frame through ``A ∘ F`` (:func:`~diffrecon.datasets.framing.frame_problem`) and
    the volume returned is ``F x_p``. ``--lam``/``--rho``/``--cg-iters`` override the preset's values
    (λ, ρ in the units of ½‖Ax − y‖² with the exact adjoint, at the prior's resolution).
    """
    import logging

    from ..datasets.framing import frame_problem
    from ..errors import InputDataError
    from ..recon import DDS, DiffusionMBIR
    from ._common import canonical_method

    method = canonical_method(args.method)
    if method not in DIFFUSION_METHODS:
        raise InputDataError(f"--method {args.method}: not a diffusion method {DIFFUSION_METHODS}")
    if getattr(args, "iters", None) is not None:
        raise InputDataError("--iters sets ADMM-TV iterations; the diffusion methods take --steps")
    cls = DDS if method == "dds" else DiffusionMBIR
    rough = _rough(y, operator, modality, geometry, rough_image)
    problem = frame_problem(prior, y, operator, rough, affine, modality, getattr(args, "resample", "auto"))
    scale, source = _scale(args, prior, rough, problem.framing, problem.notes)
    for line in problem.notes:
        logging.getLogger("diffrecon").warning(line.removeprefix("note: ").removeprefix("warning: "))
    kw = dict(seed=int(args.seed), image_scale=scale, chunk_size=int(args.chunk_size),
              progress=not args.quiet)
    for opt, key in (("steps", "steps"), ("lam", "lam"), ("rho", "rho"), ("cg_iters", "cg_iter")):
        if getattr(args, opt, None) is not None:
            kw[key] = getattr(args, opt)
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
    x, rec = solver(problem.y, problem.operator, save_state=args.save_state, save_every=int(args.save_every),
                    resume=args.resume)
    record = {"prior": str(args.prior), "image_scale": scale, "image_scale_from": source,
              "resample": getattr(args, "resample", "auto"), "framing": problem.to_dict(),
              "solver": rec.to_dict()}
    if problem.notes:
        record["notes"] = list(problem.notes)
    return problem.to_volume(x), record
