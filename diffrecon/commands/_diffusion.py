"""``diffrecon reconstruct --method dds|mbir``: the diffusion solvers on a user's measurements (CT or MRI)."""

from __future__ import annotations

DIFFUSION_METHODS = ("dds", "mbir")


def add_arguments(parser) -> None:
    g = parser.add_argument_group("diffusion (--method dds|mbir)")
    g.add_argument("--prior", default="head-64", help="prior name or checkpoint path (default head-64)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the paper's, DDS 50, DiffusionMBIR 2000; NFE = steps for DDS, "
                        "2 x steps - 1 for DiffusionMBIR)")
    g.add_argument("--seed", type=int, default=0, help="sampler seed (same seed, same output)")
    g.add_argument("--image-scale", default="1",
                   help="image value at the top of the prior's range (the head prior: the 99.9th-percentile "
                        "intensity); a number, or 'auto' = 99.9th percentile of the FBP / zero-filled image "
                        "(default 1: volumes scaled like the sample volume)")
    g.add_argument("--chunk-size", type=int, default=16, help="slices per network call (default 16)")
    g.add_argument("--save-state", default=None, help="write the sampler state here (every --save-every steps)")
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


def solve(args, y, operator, modality: str, n_views: int | None, rough_image, device):
    """Build the solver (paper settings for the modality), run it and return ``(volume, settings)``.

    ``operator`` maps the volume (its layout is the output's) to ``y``; ``rough_image`` (FBP or zero-filled)
    is only used by ``--image-scale auto``. The prior is loaded and checked against the data before work.
    """
    from ..priors import load
    from ..recon.dds import DDS
    from ..recon.mbir import DiffusionMBIR

    prior = load(args.prior, device=device)
    scale = image_scale(args.image_scale, rough_image)
    cls = DDS if args.method == "dds" else DiffusionMBIR
    kw = dict(seed=int(args.seed), image_scale=scale, chunk_size=int(args.chunk_size), progress=not args.quiet)
    if args.steps is not None:
        kw["steps"] = int(args.steps)
    solver = cls.paper_ct(prior, n_views=n_views, **kw) if modality == "ct" else cls.paper_mri(prior, **kw)
    x, rec = solver(y, operator, save_state=args.save_state, save_every=int(args.save_every), resume=args.resume)
    settings = {"method": args.method, "prior": str(args.prior), **rec.to_dict()}
    return x, settings
