"""Tuned default settings of the classical CT baselines, with the scale rule that makes them portable, and
the demo's diffusion-solver settings (:func:`demo_diffusion_settings`).

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


# The diffusion solvers in `diffrecon demo` (8-view CT of the 64³ head): λ and ρ as multiples of the
# paper's values after the exact-adjoint rescaling (`paper_ct`), plus overrides of the paper's settings.
# DiffusionMBIR runs far fewer than the paper's 2000 steps so the demo finishes in minutes on a CPU;
# see docs/diffusion-mbir-dds.md for the sweeps (`benchmarks/tune_diffusion.py`) behind these values.
DEMO_DIFFUSION = {
    # with the step-9114 head-64 prior the paper's ρ couples the slices too strongly: the 2D-only
    # baseline (ρ → 0) beat it on every plane; ρ × 0.1 (λ unchanged) was the best of a λ × ρ sweep on the
    # demo volume (+1.5 / +0.9 / +0.8 dB over the paper's values at 8 views)
    "dds": {"steps": 50, "lam_mult": 1.0, "rho_mult": 0.1},
    # at 100 steps the paper's ρ makes the shared split variable d ≈ D_z x of the previous, noisier
    # iterate pull that noise back in every step (2.6 dB on a 16-slice probe); ρ, λ × 1e-3 keep the data
    # consistency and most of the cross-slice coupling's benefit without the lag
    "diffusion_mbir": {"steps": 100, "lam_mult": 1e-3, "rho_mult": 1e-3},
}

# The paper's CT (λ, ρ) of both diffusion solvers for the reference π/(2N)-scaled back-projector
# (sparse view; `DDS.paper_ct` / `DiffusionMBIR.paper_ct` start from the same values).
PAPER_CT_LAM_RHO = {"dds": (0.04, 10.0), "diffusion_mbir": (0.04, 10.0)}


def demo_diffusion_settings(method: str, n_views: int, steps: int | None = None) -> dict:
    """Keyword arguments of ``paper_ct`` for the demo's DDS / DiffusionMBIR (sparse-view CT).

    λ and ρ are the paper's values (:data:`PAPER_CT_LAM_RHO`) rescaled for the exact adjoint
    (:func:`~diffrecon.recon.diffusion.backprojection.exact_equivalent`, as ``paper_ct`` does) and
    multiplied by :data:`DEMO_DIFFUSION`'s ``lam_mult`` / ``rho_mult``; the other entries of
    :data:`DEMO_DIFFUSION` (``steps``) override the paper's settings.

    Args:
        method: ``"dds"`` or ``"diffusion_mbir"``.
        n_views: projection count of the sparse-view acquisition.
        steps: override the step count (``None``: the demo's).

    Returns:
        e.g. ``{"steps": 50, "lam": …, "rho": …}``; use as
        ``DDS.paper_ct(prior, n_views=n_views, **demo_diffusion_settings("dds", n_views))``.
    """
    from .diffusion.backprojection import exact_equivalent

    if method not in DEMO_DIFFUSION:
        raise ValueError(
            f"demo_diffusion_settings: method must be one of {sorted(DEMO_DIFFUSION)}, found {method!r}"
        )
    cfg = dict(DEMO_DIFFUSION[method])
    lam, rho = exact_equivalent(*PAPER_CT_LAM_RHO[method], int(n_views))
    out = {"lam": lam * cfg.pop("lam_mult"), "rho": rho * cfg.pop("rho_mult"), **cfg}
    if steps is not None:
        out["steps"] = int(steps)
    return out
