"""Tuned default settings of the classical CT baselines, with the scale rule that makes them portable, and
the diffusion solvers' default CT weights (DDS's ρ multiplier, DiffusionMBIR's step-count rule
:func:`mbir_weight_multiplier`) behind the library presets ``DDS.default_ct`` / ``DiffusionMBIR.default_ct``,
which ``diffrecon reconstruct`` and the demo use.

ADMM-TV solves min_x ½‖A x − y‖² + λ Σ_a ‖D_a x‖₁. When the image (and so y) is multiplied by c the
minimiser scales by c only if λ does too, so the defaults store a *relative* weight λ_rel and use
λ = λ_rel · s with s = ⟨A 1, y⟩ / ‖A 1‖² (the least-squares fit of a constant image: the object's
mean intensity). The λ_rel values come from the sweeps in ``benchmarks/tune_admm_tv.py`` (see
``docs/benchmarks.md``): the best 3-D TV weight per view count, on the held-out head volume (``"head"``,
what the demo and the diffusion comparisons use) and on the 3-D Shepp–Logan phantom (``"phantom"``).
"""

from __future__ import annotations

import torch

from ..operators.base import LinearOperator

# data → view count → settings (best mean PSNR of the sweeps run on 2026-11-26, 200 ADMM iterations × 10 CG).
# phantom (3-D Shepp–Logan 64³, axial slices on axis 0):
#   8 views: λ_rel ∈ {0.1, 0.2, 0.3, 1, 2} × ρ ∈ {0.03, 0.1, 0.3, 1} → 0.2 / 0.1 (24.43 dB)
#   4 views: λ_rel ∈ {0.3, 1, 2} × ρ ∈ {0.1, 0.3, 1} → 0.3 / 0.3 (17.07 dB)
#   2 views: λ_rel ∈ {0.3, 1, 2} × ρ ∈ {0.1, 0.3, 1} → 2 / 0.3 (15.58 dB)
# head (the held-out Colin27 sample volume 64³, axial slices on axis 2; mean of the per-plane PSNR over
# slices that contain the head, see diffrecon.metrics.plane_metrics):
#   8 views: λ_rel ∈ {0.05, 0.1, 0.2, 0.5} × ρ ∈ {0.1, 1} → 0.1 / 1
#            (23.77 dB; the grid is flat within 0.15 dB)
#   4 views: λ_rel ∈ {0.1, 0.3, 1} × ρ ∈ {0.3, 1}, then {0.01, 0.02, 0.03, 0.05} × ρ = 1 → 0.03 / 1 (20.91 dB)
#   2 views: λ_rel ∈ {0.3, 1, 3} × ρ ∈ {0.3, 1} → 0.3 / 1 (19.43 dB)
# Other view counts use the nearest tabulated entry.
_CT_TV = {
    "phantom": {
        2: {"lam_rel": 2.0, "rho": 0.3, "n_iter": 200, "cg_iter": 10},
        4: {"lam_rel": 0.3, "rho": 0.3, "n_iter": 200, "cg_iter": 10},
        8: {"lam_rel": 0.2, "rho": 0.1, "n_iter": 200, "cg_iter": 10},
    },
    "head": {
        2: {"lam_rel": 0.3, "rho": 1.0, "n_iter": 200, "cg_iter": 10},
        4: {"lam_rel": 0.03, "rho": 1.0, "n_iter": 200, "cg_iter": 10},
        8: {"lam_rel": 0.1, "rho": 1.0, "n_iter": 200, "cg_iter": 10},
    },
}


def ct_tv_defaults(n_views: int, tuned_on: str = "head") -> dict:
    """Tuned ADMM-TV settings (λ_rel, ρ, iterations) for a CT problem with ``n_views`` angles.

    Args:
        n_views: projection count; the nearest tabulated count is used.
        tuned_on: ``"head"`` (head volumes; the default) or ``"phantom"`` (piecewise-constant objects).
    """
    if tuned_on not in _CT_TV:
        raise ValueError(f"ct_tv_defaults: tuned_on must be one of {sorted(_CT_TV)}, found {tuned_on!r}")
    table = _CT_TV[tuned_on]
    key = min(table, key=lambda k: abs(k - n_views))
    return dict(table[key])


def intensity_scale(y: torch.Tensor, operator: LinearOperator) -> float:
    """s = ⟨A 1, y⟩ / ‖A 1‖²: the mean intensity of the object, used to scale λ."""
    ones = torch.ones_like(operator.adjoint(y))
    a1 = operator.forward(ones)
    den = float((a1 * a1).sum())
    return float((a1 * y).sum()) / den if den > 0 else 1.0


# DDS's default CT weights (library `DDS.default_ct`, `reconstruct --method dds`, the demo, the benchmarks):
# the paper's λ with ρ × 0.1. Sweep on the *tuning* volume (synthetic head `tuning_volume()`, axial slab
# 24–39, 8 views; `tune_diffusion.py --method dds --volume tuning --slices 24 40 --rho-mult 1 0.3 0.1 0.03`):
# mean PSNR 26.17 (paper ρ) / 26.74 / 26.74 / 26.20 dB; on the sample volume ρ × 0.1 was best too
# (27.57 against 26.53 for the paper's). With the bundled prior the paper's ρ couples the slices so hard
# that the shared split variable drags the previous step's slice differences along.
DDS_CT_RHO_MULT = 0.1

# DDS at a limited-angle wedge (90°, 1° steps): the cross-slice TV ADMM costs more than it gives. Its split
# variables, shared by all steps, hold the volume to earlier slice differences, so the measured part of the
# spectrum is not fitted (residual ‖Ax − y‖/‖y‖ 1.9 % against ADMM-TV's 0.08 %), and 5 CG steps do not
# reach the slowly converging wedge edges. `benchmarks/limited_angle.py --volume tuning --methods dds
# --cg-iter 30 --lam-mult a --rho-mult b`, PSNR axial / coronal / sagittal (ADMM-TV 28.03 / 28.28 / 27.39):
#   3-D, 30 CG: a = b = 1 (paper's λ, ρ) not run (sample volume: 22.0 / 23.0 / 22.0); a = 1, b = 0.1: 22.0 /
#   22.1 / 21.6; a = 0.1: 26.7 / 26.9 / 26.5; a = 0.01: 26.9 / 27.3 / 26.9; a = 0.01, b = 0.1: 28.2 / 29.0 /
#   28.4; a = b = 0.01: 28.9 / 29.7 / 29.0 (weaker coupling is better all the way down);
#   per-slice data step (no TV), 30 CG: 30.48 / 30.91 / 30.00 — the best, and the default.
DDS_LA_MODE = "2d"
DDS_LA_CG_ITER = 30

# DiffusionMBIR: the paper's λ, ρ belong to its 2000 steps. With fewer steps the split variable shared by
# all steps holds the slice differences of the previous, noisier iterate, and a large ρ locks that noise
# in, or amplifies it until the result diverges. Rule: λ and ρ (their ratio, the shrink threshold, kept)
# times m(N), interpolated log-log between measured optima (N, m), extrapolated below the first with the
# first segment's slope, 1 from the paper's 2000 steps on. Sweeps on the tuning volume's axial slab
# 24–39, 8 views (`tune_diffusion.py --method diffusion_mbir --volume tuning --slices 24 40 --steps N
# --lam-mult m --rho-mult m`, plus `--n-corrector 0 --vp-variance posterior` for the predictor-only runs),
# mean PSNR over the planes:
#   N = 200, PC (1 corrector): m = 1: 16.33, 0.3 (λ only): 12.95, 0.1: 24.01, 0.03: 23.90 dB
#   N = 200, predictor-only:   m = 0.1: 24.67 dB (PC with the posterior variance: 24.62, twice the NFE)
#   N = 400, predictor-only:   m = 1: −0.15 (diverged), 0.6: 21.72, 0.3: 25.33, 0.1: 25.15 dB
#   N = 2000: the paper's weights work (sample slab, docs/diffusion-mbir-dds.md)
#   N = 100 on the sample volume (PC): m = 0.01 and 0.001 within 0.01 dB of each other
# Too small an m costs tenths of a dB, too large diverges, so the rule sits at the optima, not above.
MBIR_WEIGHT_ANCHORS = ((200, 0.1), (400, 0.3), (2000, 1.0))

# The demo's step counts (8-view CT of the 64³ head on a CPU): DDS its paper's 50; DiffusionMBIR as
# many steps as fit the demo's 10-minute budget on 2 cores (a VP prior runs predictor-only under
# DiffusionMBIR.default_ct: one network call per step).
DEMO_STEPS = {"dds": 50, "diffusion_mbir": 400}


def mbir_weight_multiplier(steps: int) -> float:
    """m(N): DiffusionMBIR's λ, ρ as a fraction of the paper's for N ≥ 1 steps
    (:data:`MBIR_WEIGHT_ANCHORS`, log-log interpolation; m = 1 from 2000 steps on).

    Below the first anchor m keeps falling with the first segment's slope, so very short runs decouple
    the slices (m → 0: a 2-D sampler with per-step data consistency, which does not diverge).
    """
    import math

    from ..errors import InputDataError

    n = int(steps)
    if n < 1:
        raise InputDataError(f"DiffusionMBIR: expected at least one step, found {n}")
    pts = MBIR_WEIGHT_ANCHORS
    if n >= pts[-1][0]:
        return 1.0
    k = max(i for i in range(len(pts) - 1) if i == 0 or pts[i][0] <= n)
    (n0, m0), (n1, m1) = pts[k], pts[k + 1]
    slope = math.log(m1 / m0) / math.log(n1 / n0)
    return m0 * (n / n0) ** slope
