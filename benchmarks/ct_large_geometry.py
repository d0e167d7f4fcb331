"""A large parallel-beam geometry that does not fit the matrix budget: 512×512 at 720 views.

Run::

    .venv/bin/python benchmarks/ct_large_geometry.py              # 16 slices, 3 repeats
    .venv/bin/python benchmarks/ct_large_geometry.py --json out.json

A and Aᵀ for this geometry would take ≈ 2.6 GiB (float32, int32 indices; ≈ 340 M non-zeros), more
than the default ``memory_budget_bytes`` (1 GiB), so ``ParallelBeam2D`` runs matrix-free: weights
are regenerated per block of views on every call, blocks sized to the budget. The script times one
forward and one adjoint of a 16-slice stack (median of ``--repeats``) and prints the process's peak
RSS (``resource.getrusage``), which must stay under 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch

from diffrecon.operators.ct import ParallelBeam2D, sparse_angles

LIMIT_MB = 4096


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--views", type=int, default=720)
    p.add_argument("--slices", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget-mib", type=int, default=1024, help="memory_budget_bytes in MiB")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    n = args.size
    A = ParallelBeam2D((n, n), sparse_angles(args.views), memory_budget_bytes=args.budget_mib << 20)
    path = "matrix" if A.uses_matrix(torch.float32) else "matrix-free"
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((args.slices, n, n), dtype=np.float32))
    rss0 = peak_rss_mb()

    fwd, adj = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        y = A(x)
        t1 = time.perf_counter()
        xb = A.adjoint(y)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        adj.append(t2 - t1)
    # one consistency number: <Ax, y> vs <x, Aᵀy> on the computed pair
    dot_rel = float(
        abs((y.double() * y.double()).sum() - (x.double() * xb.double()).sum()) / (y.double() ** 2).sum()
    )
    rec = {
        "image": [n, n],
        "views": args.views,
        "n_detectors": A.geometry.n_detectors,
        "slices": args.slices,
        "threads": args.threads,
        "path": path,
        "memory_budget_mib": args.budget_mib,
        "matrix_estimate_mib": A.matrix_nbytes(torch.float32) / 2**20,
        "forward_s_median": statistics.median(fwd),
        "adjoint_s_median": statistics.median(adj),
        "forward_s_all": fwd,
        "adjoint_s_all": adj,
        "peak_rss_mib_before": rss0,
        "peak_rss_mib": peak_rss_mb(),
        "dot_test_rel": dot_rel,
    }
    print(
        f"{n}x{n} image, {args.views} views x {A.geometry.n_detectors} bins, {args.slices} slices, "
        f"{args.threads} threads, path={path} (A+A^T would be {rec['matrix_estimate_mib']:.0f} MiB, "
        f"budget {args.budget_mib} MiB)"
    )
    print(
        f"forward  {rec['forward_s_median']:.2f} s  ({args.slices / rec['forward_s_median']:.2f} slices/s)   "
        f"all: {', '.join(f'{t:.2f}' for t in fwd)}"
    )
    print(
        f"adjoint  {rec['adjoint_s_median']:.2f} s  ({args.slices / rec['adjoint_s_median']:.2f} slices/s)   "
        f"all: {', '.join(f'{t:.2f}' for t in adj)}"
    )
    print(
        f"peak RSS {rec['peak_rss_mib']:.0f} MiB (after setup {rss0:.0f} MiB; limit {LIMIT_MB} MiB); "
        f"dot test rel. error {dot_rel:.1e}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rec, fh, indent=2)
    if rec["peak_rss_mib"] > LIMIT_MB:
        print("peak RSS above the 4 GiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
