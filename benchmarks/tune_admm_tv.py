"""Sweep ADMM-TV's weight λ (and ρ) on the demo problem; prints a table and the best setting.

The demo and ``diffrecon reconstruct --method admm_tv`` use the best relative weight found here
(``diffrecon/recon/defaults.py``), so the TV baseline is tuned as honestly as the methods it is
compared with. λ is relative: λ = λ_rel · s, s = ⟨A1, y⟩/‖A1‖² (mean object intensity).

    python benchmarks/tune_admm_tv.py --views 8 --lam 0.01 0.03 0.1 0.3 1 --rho 1 10
    python benchmarks/tune_admm_tv.py --volume sample --views 8 4   # the held-out head volume

``--volume sample`` tunes on the bundled Colin27 sample volume (RAS order: axial slices along array
axis 2), the data the diffusion solvers are compared on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch

from diffrecon.datasets.ct_simulation import make_geometry, simulate_ct
from diffrecon.demo import PLANES, phantom_volume
from diffrecon.metrics import plane_metrics
from diffrecon.recon import admm_tv
from diffrecon.recon.defaults import intensity_scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, nargs="+", default=[8])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lam", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    p.add_argument("--rho", type=float, nargs="+", default=[10.0])
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--cg-iters", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--volume", choices=["phantom", "sample"], default="phantom")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    args = p.parse_args()

    if args.volume == "sample":
        from diffrecon.datasets import sample_volume

        truth, _ = sample_volume()
        slice_axis, planes = 2, {"axial": 2, "coronal": 1, "sagittal": 0}
    else:
        truth, _ = phantom_volume(args.size)
        slice_axis, planes = 0, PLANES
    for views in args.views:
        image_shape = tuple(s for i, s in enumerate(truth.shape) if i != slice_axis)
        geom = make_geometry(image_shape, "parallel", views)
        sim = simulate_ct(truth, geom, slice_axis, args.noise, seed=0)
        op = sim.operator
        s = intensity_scale(sim.sinogram, op)
        best = None
        for lam_rel, rho in itertools.product(args.lam, args.rho):
            t0 = time.perf_counter()
            x = admm_tv(sim.sinogram, op, lam_rel * s, rho, args.iters, args.cg_iters, axes=(-3, -2, -1))
            sec = time.perf_counter() - t0
            m = plane_metrics(x, truth, planes)
            mean = float(np.mean(list(m["psnr"].values())))
            row = {"volume": args.volume, "views": views, "lam_rel": lam_rel, "rho": rho, "iters": args.iters,
                   "cg_iters": args.cg_iters,
                   "psnr_mean": round(mean, 3), **{f"psnr_{k}": round(v, 3) for k, v in m["psnr"].items()},
                   "seconds": round(sec, 1)}
            print(json.dumps(row) if args.json else
                  f"views {views:>3}  lam_rel {lam_rel:<7g} rho {rho:<6g} PSNR mean {mean:6.2f} dB "
                  f"(ax {m['psnr']['axial']:.2f} / cor {m['psnr']['coronal']:.2f} "
                  f"/ sag {m['psnr']['sagittal']:.2f})"
                  f"  {sec:.1f} s", flush=True)
            if best is None or mean > best[0]:
                best = (mean, lam_rel, rho)
        print(f"best for {views} views: lam_rel={best[1]:g}, rho={best[2]:g} ({best[0]:.2f} dB mean PSNR)",
              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
