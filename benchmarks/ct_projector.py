"""Forward / back-projection throughput of ParallelBeam2D vs ASTRA CPU ``linear`` and skimage.

Run::

    .venv/bin/python benchmarks/ct_projector.py                 # 256×256 × 64 slices, 8 and 180 views
    .venv/bin/python benchmarks/ct_projector.py --json out.json  # also write the numbers as JSON

Everything runs in one process on the same float32 stack, same geometry (256×256 image, 363 bins at
spacing 1, angles ``sparse_angles(n)``), interleaved repeat by repeat so that load from other
processes hits every method alike; reported numbers are medians over ``--repeats``.

Methods
  ours          ParallelBeam2D, the whole (64, 256, 256) stack in one call (one sparse×dense product),
                float32, ``torch.set_num_threads(--threads)``. Matrix build time is reported apart.
  astra-loop    ASTRA CPU ``linear`` projector looping over slices as most scripts do:
                ``astra.create_sino`` / ``astra.create_backprojection`` per slice (creates and
                deletes a data object each call). Single-threaded, like ASTRA's CPU 2D code.
  astra-best    The strongest CPU baseline we could build: FP/BP algorithm objects created once and
                reused, data stored with ``astra.data2d.store`` per slice, and ``--threads`` Python
                threads each owning its own objects and taking every other slice
                (``astra.algorithm.run`` releases the GIL), so ASTRA also gets all cores.
                Speed-up ratios are quoted against this one.
  skimage       ``skimage.transform.radon`` / ``iradon(filter_name=None)`` per slice, on
                ``--skimage-slices`` slices (it is slow), reported as slices/s.

Peak memory is the process's peak RSS (``resource.getrusage``) read after each stage; stages run
ASTRA and skimage first so the increase at "ours" is attributable to our matrix.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import threading
import time

import numpy as np
import torch

from diffrecon.operators.ct import ParallelBeam2D, clear_matrix_cache, sparse_angles


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_stack(n_slices: int, n: int) -> np.ndarray:
    """Smooth random-ellipse phantoms, float32 (n_slices, n, n)."""
    rng = np.random.default_rng(0)
    t = (np.arange(n) - (n - 1) / 2) / (n / 2)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    out = np.zeros((n_slices, n, n), np.float32)
    for k in range(n_slices):
        for _ in range(5):
            cx, cy = rng.uniform(-0.4, 0.4, 2)
            ax, ay = rng.uniform(0.1, 0.5, 2)
            out[k] += rng.uniform(0.2, 1.0) * ((((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2) < 1)
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class AstraBest:
    """Reusable ASTRA FP/BP algorithm objects, one set per worker thread."""

    def __init__(self, astra, n: int, n_det: int, angles: np.ndarray, workers: int):
        self.astra = astra
        self.workers = workers
        self.vg = astra.create_vol_geom(n, n)
        self.pg = astra.create_proj_geom("parallel", 1.0, n_det, angles)
        self.sets = []
        for _ in range(workers):
            pid = astra.create_projector("linear", self.pg, self.vg)
            vid = astra.data2d.create("-vol", self.vg, 0.0)
            sid = astra.data2d.create("-sino", self.pg, 0.0)
            cfg = astra.astra_dict("FP")
            cfg.update(ProjectorId=pid, VolumeDataId=vid, ProjectionDataId=sid)
            fp = astra.algorithm.create(cfg)
            cfg = astra.astra_dict("BP")
            cfg.update(ProjectorId=pid, ReconstructionDataId=vid, ProjectionDataId=sid)
            bp = astra.algorithm.create(cfg)
            self.sets.append((pid, vid, sid, fp, bp))

    def _run(self, k0: int, src: np.ndarray, dst: np.ndarray, forward: bool):
        astra = self.astra
        pid, vid, sid, fp, bp = self.sets[k0]
        for k in range(k0, src.shape[0], self.workers):
            if forward:
                astra.data2d.store(vid, src[k])
                astra.algorithm.run(fp)
                dst[k] = astra.data2d.get_shared(sid)
            else:
                astra.data2d.store(sid, src[k])
                astra.algorithm.run(bp)
                dst[k] = astra.data2d.get_shared(vid)

    def apply(self, src: np.ndarray, dst: np.ndarray, forward: bool):
        threads = [
            threading.Thread(target=self._run, args=(w, src, dst, forward)) for w in range(self.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self):
        a = self.astra
        for pid, vid, sid, fp, bp in self.sets:
            a.algorithm.delete([fp, bp])
            a.data2d.delete([vid, sid])
            a.projector.delete(pid)


def bench_views(n_views: int, stack: np.ndarray, args, astra, skt) -> dict:
    n = stack.shape[-1]
    S = stack.shape[0]
    angles = sparse_angles(n_views)
    A = ParallelBeam2D((n, n), angles)
    n_det = A.geometry.n_detectors
    rec: dict = {"views": n_views, "slices": S, "image": [n, n], "n_detectors": n_det}
    times: dict[str, list[float]] = {}

    def add(name, t):
        times.setdefault(name, []).append(t)

    # --- ASTRA, loop over slices as users do
    sino_ref = np.empty((S, n_views, n_det), np.float32)
    back_ref = np.empty_like(stack)
    if astra is not None:
        vg = astra.create_vol_geom(n, n)
        pg = astra.create_proj_geom("parallel", 1.0, n_det, angles)
        pid = astra.create_projector("linear", pg, vg)

        def astra_fp():
            for k in range(S):
                sid, s = astra.create_sino(stack[k], pid)
                sino_ref[k] = s
                astra.data2d.delete(sid)

        def astra_bp():
            for k in range(S):
                bid, b = astra.create_backprojection(sino_ref[k], pid)
                back_ref[k] = b
                astra.data2d.delete(bid)

        best = AstraBest(astra, n, n_det, angles, args.threads)
        sino_b = np.empty_like(sino_ref)
        back_b = np.empty_like(back_ref)
    rec["rss_mb_before"] = peak_rss_mb()

    # --- skimage (subset of slices)
    n_sk = min(args.skimage_slices, S)
    theta_deg = np.degrees(angles)
    if skt is not None and n_sk > 0:
        sk_sinos = [None] * n_sk

        def sk_fp():
            for k in range(n_sk):
                sk_sinos[k] = skt.radon(stack[k], theta=theta_deg, circle=False)

        def sk_bp():
            for k in range(n_sk):
                skt.iradon(sk_sinos[k], theta=theta_deg, filter_name=None, circle=False, output_size=n)

    # --- ours: build (timed separately), warm-up
    torch.set_num_threads(args.threads)
    clear_matrix_cache()
    x = torch.from_numpy(stack)
    c0 = time.process_time()
    t_build = timed(lambda: A.system_matrix(torch.float32, "cpu"))
    rec["build_cpu_s"] = time.process_time() - c0  # CPU seconds, all threads (less load-sensitive)
    M, MT = A.system_matrix(torch.float32, "cpu")
    nnz = int(M.values().numel())
    mat_bytes = sum(
        m.values().numel() * m.values().element_size()
        + m.col_indices().numel() * m.col_indices().element_size()
        + m.crow_indices().numel() * m.crow_indices().element_size()
        for m in (M, MT)
    )
    y = A(x)
    A.adjoint(y)
    rec["rss_mb_after_build"] = peak_rss_mb()

    for r in range(args.repeats):
        add("ours_fp", timed(lambda: A(x)))
        add("ours_bp", timed(lambda: A.adjoint(y)))
        if astra is not None:
            add("astra_loop_fp", timed(astra_fp))
            add("astra_loop_bp", timed(astra_bp))
            add("astra_best_fp", timed(lambda: best.apply(stack, sino_b, True)))
            add("astra_best_bp", timed(lambda: best.apply(sino_ref, back_b, False)))
        if skt is not None and n_sk > 0 and r < args.skimage_repeats:
            add("skimage_fp", timed(sk_fp) * S / n_sk)
            add("skimage_bp", timed(sk_bp) * S / n_sk)
    rec["rss_mb_peak"] = peak_rss_mb()

    if astra is not None:
        y_ref = torch.from_numpy(sino_ref)
        rec["rel_err_vs_astra_fp"] = float((y - y_ref).norm() / y_ref.norm())
        xb = A.adjoint(y_ref)
        rec["rel_err_vs_astra_bp"] = float(
            (xb - torch.from_numpy(back_ref)).norm() / torch.from_numpy(back_ref).norm()
        )
        best.close()
        astra.projector.delete(pid)

    med = {k: statistics.median(v) for k, v in times.items()}
    rec["seconds_median"] = med
    rec["seconds_all"] = times
    rec["slices_per_s"] = {k: S / v for k, v in med.items()}
    rec["build_s"] = t_build
    rec["nnz"] = nnz
    rec["matrix_mb"] = mat_bytes / 2**20
    rec["ratios"] = {}
    for base in ("astra_best", "astra_loop", "skimage"):
        for op in ("fp", "bp"):
            if f"{base}_{op}" in med:
                rec["ratios"][f"{base}_{op}"] = med[f"{base}_{op}"] / med[f"ours_{op}"]
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--views", type=int, nargs="+", default=[8, 180])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skimage-slices", type=int, default=4, help="slices timed for skimage (0: skip)")
    p.add_argument("--skimage-repeats", type=int, default=2)
    p.add_argument("--no-astra", action="store_true")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-' for stdout)")
    args = p.parse_args(argv)

    astra = None
    if not args.no_astra:
        try:
            import astra  # noqa: F811
        except ImportError:
            print("astra-toolbox not installed: skipping the ASTRA columns", file=sys.stderr)
    try:
        import skimage.transform as skt
    except ImportError:  # pragma: no cover
        skt = None

    stack = make_stack(args.slices, args.size)
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "astra": getattr(astra, "__version__", None),
        "runs": [],
    }
    for nv in args.views:
        rec = bench_views(nv, stack, args, astra, skt)
        results["runs"].append(rec)
        sps = rec["slices_per_s"]
        print(
            f"\n== {args.size}x{args.size} x {args.slices} slices, {nv} views, {rec['n_detectors']} bins =="
        )
        print(
            f"matrix build {rec['build_s']:.2f} s wall ({rec['build_cpu_s']:.2f} CPU-s), "
            f"nnz {rec['nnz']:,}, A+A^T {rec['matrix_mb']:.0f} MiB (float32, int32 idx)"
        )
        print(f"{'method':<14}{'FP slices/s':>14}{'BP slices/s':>14}{'FP ratio':>10}{'BP ratio':>10}")
        for m in ("ours", "astra_best", "astra_loop", "skimage"):
            if f"{m}_fp" not in sps:
                continue
            rf = rec["ratios"].get(f"{m}_fp")
            rb = rec["ratios"].get(f"{m}_bp")
            fmt = lambda r: f"{r:>9.1f}x" if r is not None else f"{'':>10}"  # noqa: E731
            print(f"{m:<14}{sps[m + '_fp']:>14.1f}{sps[m + '_bp']:>14.1f}{fmt(rf)}{fmt(rb)}")
        print("(ratio = method time / ours time, i.e. our speed-up over it)")
        print(
            f"peak RSS: before {rec['rss_mb_before']:.0f} MiB, "
            f"after build {rec['rss_mb_after_build']:.0f} MiB, "
            f"end {rec['rss_mb_peak']:.0f} MiB"
        )
        if "rel_err_vs_astra_fp" in rec:
            print(
                f"relative L2 difference vs ASTRA: FP {rec['rel_err_vs_astra_fp']:.2e}, "
                f"BP {rec['rel_err_vs_astra_bp']:.2e}"
            )
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
