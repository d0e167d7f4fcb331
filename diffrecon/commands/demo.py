"""``diffrecon demo``: the main job (simulate sparse-view CT, reconstruct with every method, report)."""

from __future__ import annotations

from ._common import add_device_argument, resolve_device


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the sparse-view CT demo and write volumes, a montage and metrics.json",
        description="Simulate sparse-view parallel-beam CT of a bundled volume and reconstruct it with every "
        "method; writes NIfTI volumes, sinogram.npz, montage.png and metrics.json into --out.",
    )
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--views", type=int, default=8, help="number of views (default 8)")
    p.add_argument("--size", type=int, default=64, help="phantom size per axis (default 64)")
    p.add_argument("--noise", type=float, default=0.0, help="relative sinogram noise sigma (default 0)")
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, views=args.views, size=args.size, noise=args.noise, seed=args.seed,
             device=resolve_device(args.device), overwrite=args.overwrite, progress=not args.quiet)
    return 0
