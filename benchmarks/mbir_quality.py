"""Quality of the 3-D diffusion solvers on the held-out head volume, against classical and 2-D baselines.

For each problem (8/4/2-view parallel CT, 90° limited-angle CT, 4× multi-coil MRI) on the bundled
Colin27 sample volume (64³, axial slices = array axis 2, never seen by the prior), every method:

==================  ===============================================================================
``baseline``        FBP (ramp) for CT, zero-filled SENSE-combined image Re(Aᴴy) for MRI
``admm_tv``         3-D anisotropic ADMM-TV; CT: the weight tuned on this volume (``recon/defaults.py``),
                    MRI: the TV-SENSE defaults (λ relative to max|Aᴴy|)
``dps``             per-slice DPS (``--dps-steps`` steps, ζ = 1)
``dds_2d``          "2D-only diffusion": DDS without the cross-slice TV (``DDS.slice_only``)
``diffusion_mbir``  DiffusionMBIR with ``--mbir-steps`` steps (paper 2000); CT: ``DiffusionMBIR.default_ct``
                    (λ, ρ by the step-count rule of ``recon/defaults.py``), MRI: paper λ, ρ
``dds_paper``       DDS with the paper's settings (``DDS.paper_ct``, 50 NFE; CT only)
``dds``             ``DDS.default_ct`` (as the demo and the CLI run it): sparse-view CT with ρ × 0.1,
                    limited angle with the per-slice data step and 30 CG steps (both tuned on the tuning
                    volume), MRI with the paper preset
==================  ===============================================================================

Each finished (problem, method) is appended to ``--results`` (JSON lines) and its volume saved next to
it, so an interrupted sweep continues where it stopped; ``--table`` prints the markdown table of all
results and ``--montage PROBLEM`` draws the truth and every method with error maps.

    python benchmarks/mbir_quality.py --problems ct-sv8 ct-sv4 --threads 1
    python benchmarks/mbir_quality.py --table
    python benchmarks/mbir_quality.py --montage ct-sv8 docs/img/mbir_quality_ct-sv8.png
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from diffrecon.datasets import sample_volume
from diffrecon.metrics import plane_metrics
from diffrecon.recon.problems import build_problem

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}
PROBLEMS = ("ct-sv8", "ct-sv4", "ct-sv2", "ct-la90", "mri-u4")
METHODS = ("baseline", "admm_tv", "dps", "dds_2d", "diffusion_mbir", "dds_paper", "dds")
LABELS = {"baseline": "FBP / zero-filled", "admm_tv": "ADMM-TV (3-D)", "dps": "DPS (per slice)",
          "dds_2d": "2D-only diffusion", "diffusion_mbir": "DiffusionMBIR", "dds_paper": "DDS, paper λ, ρ",
          "dds": "DDS"}


def solve(method: str, prob, prior, args) -> tuple[torch.Tensor, int, dict]:
    """Run one method on one problem; returns (volume, NFE, settings)."""
    from diffrecon.recon import DDS, DPS, DiffusionMBIR, admm_tv, fbp
    from diffrecon.recon.defaults import ct_tv_defaults, intensity_scale

    ct = prob.modality == "ct"
    la = prob.name.startswith("ct-la")
    if method == "baseline":
        if ct:
            return fbp(prob.y, prob.operator.op2d).movedim(0, 2), 0, {"filter": "ramp"}
        return prob.operator.adjoint(prob.y), 0, {"image": "Re(A^H y)"}
    if method == "admm_tv":
        if ct:
            d = ct_tv_defaults(prob.n_views, "head")
            lam = d["lam_rel"] * intensity_scale(prob.y, prob.operator)
        else:
            from diffrecon.commands.mri import TV_DEFAULTS

            d = {k: TV_DEFAULTS[k] for k in ("rho", "n_iter", "cg_iter")}
            d["lam_rel_max_aty"] = TV_DEFAULTS["lam"]
            lam = TV_DEFAULTS["lam"] * float(prob.operator.adjoint(prob.y).abs().max())
        x = admm_tv(prob.y, prob.operator, lam, d["rho"], d["n_iter"], d["cg_iter"], axes=(-3, -2, -1),
                    progress=False)
        return x, 0, {"lam": lam, **d}
    common = dict(seed=args.seed, progress=False)
    if method == "dps":
        solver = DPS(prior, steps=args.dps_steps, **common)
    elif method == "dds_2d":
        solver = DDS.slice_only(prior, **common)
    elif method in ("dds", "dds_paper"):
        if not ct:
            solver = DDS.paper_mri(prior, **common)
        elif method == "dds_paper":
            solver = DDS.paper_ct(prior, n_views=prob.n_views, limited_angle=la, **common)
        else:  # diffrecon's default: ρ × 0.1 (sparse view), per-slice 30-CG data step (limited angle)
            solver = DDS.default_ct(prior, n_views=prob.n_views, limited_angle=la, **common)
    elif method == "diffusion_mbir":
        if ct:
            solver = DiffusionMBIR.default_ct(prior, n_views=prob.n_views, steps=args.mbir_steps, **common)
        else:
            solver = DiffusionMBIR.paper_mri(prior, steps=args.mbir_steps, **common)
    else:
        raise ValueError(method)
    x, rec = solver(prob.y, prob.operator)
    return x, rec.nfe, rec.settings


def load_results(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    out = ["| problem | method | PSNR axial / coronal / sagittal (dB) | SSIM axial / coronal / sagittal "
           "| NFE | seconds |",
           "|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: (PROBLEMS.index(r["problem"]) if r["problem"] in PROBLEMS else 99,
                                         order.get(r["method"], 99))):
        ps = " / ".join(f"{r['psnr'][p]:.2f}" for p in PLANES)
        ss = " / ".join(f"{r['ssim'][p]:.3f}" for p in PLANES)
        out.append(f"| {r['problem']} | {LABELS.get(r['method'], r['method'])} | {ps} | {ss} | {r['nfe']} | "
                   f"{r['seconds']:.0f} |")
    return "\n".join(out)


def montage(results: pathlib.Path, problem: str, out: str) -> None:
    from diffrecon.viz import save_montage

    truth, _ = sample_volume()
    folder = results.with_suffix("") / problem
    rows = {r["method"]: r for r in load_results(results) if r["problem"] == problem}
    vols = {"truth": truth}
    titles = {}
    for m in METHODS:
        f = folder / f"{m}.npy"
        if m in rows and f.exists():
            vols[LABELS[m]] = np.load(f)
            titles[LABELS[m]] = f"{LABELS[m]}\n{np.mean(list(rows[m]['psnr'].values())):.1f} dB"
    save_montage(out, vols, reference="truth", planes=PLANES, titles=titles, superior_axis=2, anterior_axis=1,
                 overwrite=True)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--prior", default="head-64")
    p.add_argument("--mbir-steps", type=int, default=400,
                   help="DiffusionMBIR steps (paper 2000; default 400, the demo's)")
    p.add_argument("--dps-steps", type=int, default=100, help="DPS steps (paper 1000; CPU default 100)")
    p.add_argument("--results", default="runs/mbir_quality.jsonl", help="JSON-lines results file (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the markdown table of --results and exit")
    p.add_argument("--montage", nargs=2, metavar=("PROBLEM", "PNG"),
                   help="draw one problem's montage and exit")
    args = p.parse_args()
    results = pathlib.Path(args.results)
    if args.table:
        print(table(load_results(results)))
        return
    if args.montage:
        montage(results, *args.montage)
        return
    torch.set_num_threads(args.threads)
    from diffrecon.priors import load

    prior = load(args.prior)
    truth, _ = sample_volume()
    done = {(r["problem"], r["method"]) for r in load_results(results)}
    results.parent.mkdir(parents=True, exist_ok=True)
    for name in args.problems:
        prob = build_problem(name, truth, slice_axis=2)
        folder = results.with_suffix("") / name
        folder.mkdir(parents=True, exist_ok=True)
        for method in args.methods:
            if (name, method) in done:
                continue
            t0 = time.perf_counter()
            x, nfe, settings = solve(method, prob, prior, args)
            sec = time.perf_counter() - t0
            x = x.real if x.is_complex() else x
            m = plane_metrics(x, truth, PLANES)
            np.save(folder / f"{method}.npy", x.float().numpy())
            row = {"problem": name, "method": method, "psnr": m["psnr"], "ssim": m["ssim"], "nfe": nfe,
                   "seconds": round(sec, 1), "prior": args.prior, "settings": settings,
                   "threads": args.threads, "date": time.strftime("%Y-%m-%d")}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name:8s} {method:15s} PSNR " + " / ".join(f"{v:.2f}" for v in m["psnr"].values())
                  + f"  NFE {nfe}  {sec:.0f} s", flush=True)


if __name__ == "__main__":
    main()
