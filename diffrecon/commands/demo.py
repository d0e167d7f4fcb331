"""``diffrecon demo``: the main job (simulate sparse-view CT, reconstruct with every method, report)."""

from __future__ import annotations

from ._common import add_device_argument, alias_help, canonical_method, resolve_device


def add_parser(sub) -> None:
    from ..demo import METHODS, VOLUMES

    p = sub.add_parser(
        "demo",
        help="run the sparse-view CT demo and write volumes, a montage and metrics.json",
        description="Simulate sparse-view parallel-beam CT of the held-out sample head volume and "
        "reconstruct it with FBP, tuned 3-D ADMM-TV, DDS and DiffusionMBIR (bundled 2-D slice prior); writes "
        "NIfTI volumes, sinogram.npz, montage.png and metrics.json into --out.",
    )
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--views", type=int, default=8, help="number of views over [0, 180) degrees (default 8)")
    p.add_argument("--volume", choices=VOLUMES, default="sample",
                   help="sample: the bundled 64^3 head (default); "
                        "phantom: 3-D Shepp-Logan (classical methods)")
    p.add_argument("--size", type=int, default=64,
                   help="phantom size per axis (--volume phantom; default 64)")
    p.add_argument("--methods", nargs="+", type=canonical_method, choices=METHODS, default=None,
                   help="methods to run (default: all four for the head, fbp and admm_tv for the phantom; "
                        f"{alias_help()})")
    p.add_argument("--prior", default="head-64", help="prior name or checkpoint path (default head-64)")
    p.add_argument("--dds-steps", type=int, default=None, help="DDS steps (= NFE; default 50)")
    p.add_argument("--mbir-steps", type=int, default=None,
                   help="DiffusionMBIR predictor-corrector steps (NFE = 2 x steps - 1; paper 2000)")
    p.add_argument("--noise", type=float, default=0.0, help="relative sinogram noise sigma (default 0)")
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.set_defaults(func=run)


def check_options(args) -> None:
    """Refuse, before any work, what the demo cannot run: an ``--out`` that is a file or in a read-only
    folder, outputs there from an earlier run (without ``--overwrite``), fewer than one view or diffusion
    step, a non-finite or negative ``--noise``, a phantom under 8³, and a phantom or view count whose
    arrays would not fit in memory (:func:`~diffrecon.io.sinogram.check_memory`)."""
    import math
    import pathlib

    from ..datasets.ct_simulation import check_acquisition_memory
    from ..demo import _check_methods, output_files
    from ..errors import InputDataError, OutputExistsError
    from ..io.atomic import check_writable
    from ..io.sinogram import check_memory
    from ..operators.geometry import default_n_detectors

    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputDataError(f"--out {out}: that is a file; the demo writes into a folder")
    methods = _check_methods(args.methods, args.volume)
    for name in output_files(methods):
        check_writable(out / name, overwrite=True)  # a file or read-only folder in the way fails now
    clash = [f for f in output_files(methods) if (out / f).exists()]
    if clash and not args.overwrite:
        raise OutputExistsError(f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them")
    if args.views < 1:
        raise InputDataError(f"--views: expected at least one view, found {args.views}")
    for flag, steps in (("--dds-steps", args.dds_steps), ("--mbir-steps", args.mbir_steps)):
        if steps is not None and steps < 1:
            raise InputDataError(f"{flag}: expected a number of steps >= 1, found {steps}")
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise InputDataError(f"--noise: expected a relative noise level >= 0, found {args.noise}")
    n = args.size if args.volume == "phantom" else 64
    if n < 8:
        raise InputDataError(f"--size: expected a phantom size >= 8, found {n}")
    check_memory(10 * 4 * n**3, f"--size {n}", f"ADMM-TV on the {n}^3 volume (about ten float32 volumes)")
    check_acquisition_memory((n, n), args.views, None, default_n_detectors((n, n)), n)
    if any(m in ("dds", "diffusion_mbir") for m in methods):
        from ..priors.registry import resolve

        resolve(args.prior)  # an unknown prior name fails now; its image size is checked by run_demo


def run(args) -> int:
    from ..demo import run_demo

    check_options(args)
    run_demo(args.out, views=args.views, volume=args.volume, size=args.size, methods=args.methods,
             prior=args.prior, dds_steps=args.dds_steps, mbir_steps=args.mbir_steps, noise=args.noise,
             seed=args.seed, device=resolve_device(args.device), overwrite=args.overwrite,
             progress=not args.quiet)
    return 0
