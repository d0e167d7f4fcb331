"""Tuned default settings of the classical CT baselines, with the scale rule that makes them portable.

ADMM-TV solves min_x ½‖A x − y‖² + λ Σ_a ‖D_a x‖₁. When the image (and so y) is multiplied by c the
minimiser scales by c only if λ does too, so the defaults store a *relative* weight λ_rel and use
λ = λ_rel · s with s = ⟨A 1, y⟩ / ‖A 1‖² (the least-squares fit of a constant image: the object's
mean intensity). The λ_rel values come from the sweep in ``benchmarks/tune_admm_tv.py`` on the demo's
phantom (see ``docs/benchmarks.md``): the best 3-D TV weight per view count.
"""

from __future__ import annotations

import torch

from ..operators.base import LinearOperator

# view count → settings (best mean PSNR of the sweeps run on 2026-11-26, 200 ADMM iterations × 10 CG):
#   8 views: λ_rel ∈ {0.1, 0.2, 0.3, 1, 2} × ρ ∈ {0.03, 0.1, 0.3, 1} → 0.2 / 0.1 (24.43 dB)
#   4 views: λ_rel ∈ {0.3, 1, 2} × ρ ∈ {0.1, 0.3, 1} → 0.3 / 0.3 (17.07 dB)
#   2 views: λ_rel ∈ {0.3, 1, 2} × ρ ∈ {0.1, 0.3, 1} → 2 / 0.3 (15.58 dB)
# Other view counts use the nearest tabulated entry.
_CT_TV = {
    2: {"lam_rel": 2.0, "rho": 0.3, "n_iter": 200, "cg_iter": 10},
    4: {"lam_rel": 0.3, "rho": 0.3, "n_iter": 200, "cg_iter": 10},
    8: {"lam_rel": 0.2, "rho": 0.1, "n_iter": 200, "cg_iter": 10},
}


def ct_tv_defaults(n_views: int) -> dict:
    """Tuned ADMM-TV settings (λ_rel, ρ, iterations) for a CT problem with ``n_views`` angles."""
    key = min(_CT_TV, key=lambda k: abs(k - n_views))
    return dict(_CT_TV[key])


def intensity_scale(y: torch.Tensor, operator: LinearOperator) -> float:
    """s = ⟨A 1, y⟩ / ‖A 1‖²: the mean intensity of the object, used to scale λ."""
    ones = torch.ones_like(operator.adjoint(y))
    a1 = operator.forward(ones)
    den = float((a1 * a1).sum())
    return float((a1 * y).sum()) / den if den > 0 else 1.0
