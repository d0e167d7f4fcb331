"""Benchmark: the SENSE normal operator AᴴA of diffrecon vs sigpy on the same data, in one process.

Data: C coils (birdcage maps, shared by all slices), S slices of N×N, uniform 1-D 4× mask, complex64.
diffrecon applies ``MultiCoilMRI(maps, mask).normal`` to the ``(S, N, N)`` stack in one batched call;
sigpy applies ``Sense(maps, weights=mask, ishape=(S, 1, N, N)).N`` (its own broadcasting over slices).
Both outputs are compared (relative difference printed) and timed as the median of ``--repeats`` runs
after one warm-up. torch runs with ``--threads`` threads (numpy's FFT in sigpy is single-threaded);
``--threads 1`` gives a one-core comparison.

Usage::

    .venv/bin/python benchmarks/mri_operator.py                 # 15 coils, 256x256, 32 slices
    .venv/bin/python benchmarks/mri_operator.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coils", type=int, default=15)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import sigpy
    import sigpy.mri

    from diffrecon.operators.coils import birdcage_maps
    from diffrecon.operators.mri import MultiCoilMRI
    from diffrecon.operators.sampling import uniform1d_mask

    c, n, s = args.coils, args.size, args.slices
    maps = birdcage_maps((c, n, n))
    mask = uniform1d_mask((n, n), 4, 0.08, seed=0).mask
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s, n, n, generator=g, dtype=torch.complex64)

    ours = MultiCoilMRI(maps, mask)
    ref = sigpy.mri.linop.Sense(maps.numpy(), weights=mask.numpy().astype(np.float32), ishape=(s, 1, n, n)).N
    x_np = x.numpy().reshape(s, 1, n, n)

    with torch.no_grad():
        out_ours = ours.normal(x).numpy()
    out_ref = ref(x_np).reshape(s, n, n)
    rel = float(np.linalg.norm(out_ours - out_ref) / np.linalg.norm(out_ref))

    with torch.no_grad():
        t_ours = _median_time(lambda: ours.normal(x), args.repeats)
    t_ref = _median_time(lambda: ref(x_np), args.repeats)

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), sigpy {sigpy.__version__}, numpy {np.__version__}"
    )
    print(f"data: {c} coils, {s} slices of {n}x{n}, complex64, uniform1d 4x mask")
    print(f"outputs agree: relative difference {rel:.2e}")
    print(f"diffrecon MultiCoilMRI.normal: {t_ours * 1e3:8.1f} ms  (median of {args.repeats})")
    print(f"sigpy Sense.N:                 {t_ref * 1e3:8.1f} ms  (median of {args.repeats})")
    print(f"ratio sigpy / diffrecon: {t_ref / t_ours:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
