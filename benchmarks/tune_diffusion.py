"""Sweep DDS / DiffusionMBIR settings on the held-out head volume; the counterpart of tune_admm_tv.py.

The published values (DDS and DiffusionMBIR: λ = 0.04, ρ = 10 for the reference back-projector, TV
along z only; DiffusionMBIR: 2000 predictor–corrector steps) were chosen for 256² AAPM CT slices and
GPU budgets. This sweep tunes the diffusion methods as honestly as the ADMM-TV baseline they are
compared with (``tune_admm_tv.py --volume sample``), on the same data. λ and ρ are multiples of the
paper's values after the exact-adjoint rescaling, so ``--lam-mult 1 --rho-mult 1`` is ``paper_ct``.

    python benchmarks/tune_diffusion.py --method dds --views 8 --lam-mult 0.5 1 2 --tv-axes z all
    python benchmarks/tune_diffusion.py --method diffusion_mbir --views 8 --steps 100 200 --rho-mult 0.1 1 \
        --slices 24 40     # a 16-slice axial slab for quick probes

Prints one line (or JSON object with ``--json``) per setting: PSNR/SSIM per plane, NFE, seconds.
``--method`` takes the library names ``dds`` and ``diffusion_mbir`` (``mbir`` is an accepted alias).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch

from diffrecon.datasets import sample_volume
from diffrecon.datasets.synth import tuning_volume
from diffrecon.metrics import plane_metrics
from diffrecon.priors import load
from diffrecon.recon import DDS, DiffusionMBIR
from diffrecon.recon.problems import ct_problem

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}
SOLVERS = {"dds": DDS, "diffusion_mbir": DiffusionMBIR}
ALIASES = {"mbir": "diffusion_mbir"}  # the older spelling (the CLI's alias too)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=sorted(SOLVERS), default="dds", type=lambda m: ALIASES.get(m, m),
                   help="dds or diffusion_mbir (alias: mbir)")
    p.add_argument("--prior", default="head-64", help="bundled prior name or checkpoint path")
    p.add_argument("--views", type=int, nargs="+", default=[8])
    p.add_argument("--limited-angle", type=float, default=None, metavar="DEGREES",
                   help="limited-angle CT over [0, DEGREES) at 1-degree steps instead of --views")
    p.add_argument("--lam-mult", type=float, nargs="+", default=[1.0])
    p.add_argument("--rho-mult", type=float, nargs="+", default=[1.0])
    p.add_argument("--tv-axes", nargs="+", default=["z"], help="z (paper) and/or all")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="default: 50 (dds), 100 (diffusion_mbir)")
    p.add_argument("--eta", type=float, nargs="+", default=[0.85], help="DDS stochasticity")
    p.add_argument("--cg-iter", type=int, nargs="+", default=None,
                   help="default: 5 (dds), 1 (diffusion_mbir)")
    p.add_argument("--snr", type=float, nargs="+", default=[0.16], help="DiffusionMBIR Langevin snr")
    p.add_argument("--n-corrector", type=int, nargs="+", default=[1],
                   help="DiffusionMBIR Langevin steps per step (paper 1)")
    p.add_argument("--vp-variance", nargs="+", default=["beta"], choices=["beta", "posterior"],
                   help="DiffusionMBIR VP predictor noise")
    p.add_argument("--volume", choices=["sample", "tuning"], default="sample",
                   help="sample: the held-out Colin27 head (the demo's volume); tuning: a synthetic head "
                        "that is neither the sample nor in the prior's training bank "
                        "(diffrecon.datasets.synth.tuning_volume)")
    p.add_argument("--tuning-seed", type=int, default=1, help="generator seed of --volume tuning")
    p.add_argument("--clip-x0", type=int, nargs="+", default=[0], help="DDS: clamp Tweedie's estimate (0/1)")
    p.add_argument("--slices", type=int, nargs=2, default=None, metavar=("START", "STOP"),
                   help="reconstruct only axial slices START..STOP-1 (quick probes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=None, help="slices per network call (default: solver's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the measurements are simulated there too)")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cls = SOLVERS[args.method]
    steps = args.steps or ([50] if args.method == "dds" else [100])
    cg_iters = args.cg_iter or ([5] if args.method == "dds" else [1])

    device = torch.device(args.device)
    prior = load(args.prior, device=device)
    if args.volume == "tuning":
        truth = torch.from_numpy(tuning_volume(args.tuning_seed)[0])
    else:
        truth, _ = sample_volume()
    truth = truth.to(device)
    if args.slices:
        truth = truth[:, :, args.slices[0]:args.slices[1]].contiguous()
    for views in ([None] if args.limited_angle else args.views):
        prob = ct_problem(truth, views or 8, slice_axis=2, limited_angle_degrees=args.limited_angle)
        views = prob.n_views
        la = {"limited_angle": True} if args.limited_angle and args.method == "dds" else {}
        base = cls.paper_ct(prior, n_views=views, **la)
        grid = itertools.product(args.lam_mult, args.rho_mult, args.tv_axes, steps, cg_iters, args.eta,
                                 args.snr, args.clip_x0, args.n_corrector, args.vp_variance)
        for lam_m, rho_m, axes, n, cg, eta, snr, clip, n_corr, vp_var in grid:
            kw = dict(lam=base.lam * lam_m, rho=base.rho * rho_m, tv_axes="all" if axes == "all" else (axes,),
                      steps=n, cg_iter=cg, seed=args.seed, progress=False)
            if args.chunk_size:
                kw["chunk_size"] = args.chunk_size
            if args.method == "dds":
                kw.update(eta=eta, clip_x0=bool(clip))
            else:
                kw.update(snr=snr, n_corrector=n_corr, vp_variance=vp_var)
            solver = cls.paper_ct(prior, n_views=views, **la, **kw)
            t0 = time.perf_counter()
            x, rec = solver(prob.y, prob.operator)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            sec = time.perf_counter() - t0
            m = plane_metrics(x, truth, PLANES)
            mean = float(np.mean(list(m["psnr"].values())))
            row = {"method": args.method, "views": views, "limited_angle": args.limited_angle,
                   "lam_mult": lam_m, "rho_mult": rho_m, "tv_axes": axes, "steps": n, "cg_iter": cg,
                   **({"eta": eta, "clip_x0": bool(clip)} if args.method == "dds" else
                      {"snr": snr, "n_corrector": n_corr, "vp_variance": vp_var}),
                   "volume": args.volume,
                   "slices": args.slices, "psnr_mean": round(mean, 3),
                   **{f"psnr_{k}": round(v, 3) for k, v in m["psnr"].items()},
                   **{f"ssim_{k}": round(v, 4) for k, v in m["ssim"].items()},
                   "nfe": rec.nfe, "seconds": round(sec, 1), "device": str(device)}
            print(json.dumps(row) if args.json else
                  f"{args.method} views {views} lam×{lam_m:g} rho×{rho_m:g} tv {axes:<3} steps {n} cg {cg}"
                  + ("" if args.method == "dds" else f" corr {n_corr} var {vp_var} snr {snr:g}") + ": "
                  f"PSNR {mean:6.2f} (ax {m['psnr']['axial']:.2f} / cor {m['psnr']['coronal']:.2f} / "
                  f"sag {m['psnr']['sagittal']:.2f}) NFE {rec.nfe} {sec:.0f} s", flush=True)


if __name__ == "__main__":
    main()
