r"""The DiffusionMBIR/DDS reference code's scaled CT back-projector, and the closing data step.

The reference implementations use as "Aᵀ" an unfiltered back-projection scaled like an FBP,
:math:`A^\top_{ref} = c\,A^\top` with :math:`c = \pi/(2N)` (N projection angles), so their published
λ, ρ belong to the data term :math:`c\cdot\tfrac12\|Ax-y\|^2`. diffrecon uses the exact adjoint by
default and converts the weights (:func:`exact_equivalent`); ``backprojector="reference"`` keeps the
reference's weights and scales the data term instead (:func:`reference_data_weight`).
"""

from __future__ import annotations

import math

import torch

from ...errors import InputDataError
from ...operators.base import LinearOperator

Tensor = torch.Tensor

BACKPROJECTORS = ("exact", "reference")


def n_views_of(operator: LinearOperator) -> int:
    """Number of projection angles of a (SliceWise) CT operator; raises for other operators."""
    op2d = getattr(operator, "op2d", operator)
    geom = getattr(op2d, "geometry", None)
    n = getattr(geom, "n_angles", None)
    if n is None:
        raise InputDataError(
            "backprojector='reference' reproduces the π/(2N)-scaled CT back-projector of the "
            f"DiffusionMBIR/DDS code and needs a CT operator with a geometry; found {type(op2d).__name__}"
        )
    return int(n)


def reference_data_weight(operator: LinearOperator) -> float:
    r"""c = π / (2 N_views): the factor by which the reference code's "Aᵀ" differs from the exact adjoint.

    Using Aᵀ_ref = c·Aᵀ makes every data term c·½‖Ax − y‖²; see :func:`exact_equivalent`.
    """
    return math.pi / (2.0 * n_views_of(operator))


def exact_equivalent(lam: float, rho: float, n_views: int) -> tuple[float, float]:
    r"""(λ, ρ) for the exact adjoint that reproduce the reference code's (λ, ρ) and π/(2N) back-projector.

    The reference solves c·½‖Ax − y‖² + λ‖D_z x‖₁ with c = π/(2N): its x-update is
    (c AᵀA + ρ DᵀD) x = c Aᵀy + ρ Dᵀ(d − u) and its shrinkage threshold λ/ρ. Dividing the x-update by
    c gives (AᵀA + (ρ/c) DᵀD) x = Aᵀy + (ρ/c) Dᵀ(d − u), and CG iterates are invariant under scaling
    the whole system, so λ' = λ/c = λ·2N/π and ρ' = ρ/c = ρ·2N/π (same threshold λ'/ρ' = λ/ρ) give
    *identical* iterates with the exact adjoint.

    Example:
        >>> from diffrecon.recon.diffusion import exact_equivalent
        >>> tuple(round(v, 4) for v in exact_equivalent(0.04, 10.0, 8))
        (0.2037, 50.9296)
    """
    c = math.pi / (2.0 * int(n_views))
    return lam / c, rho / c


def paper_ct_weights(n_views: int, backprojector: str = "exact", limited_angle: bool = False):
    """The published CT (λ, ρ) shared by DiffusionMBIR and DDS: 0.04 (DDS limited angle: 0.4) and 10 for
    the reference back-projector, rescaled by :func:`exact_equivalent` for ``backprojector="exact"``."""
    lam, rho = (0.4 if limited_angle else 0.04), 10.0
    if backprojector == "exact":
        lam, rho = exact_equivalent(lam, rho, n_views)
    return lam, rho


def final_data_consistency(x: Tensor, y: Tensor, op: LinearOperator) -> Tensor:
    r"""DiffusionMBIR's closing step ("kaczmarz"): x ← x + Aᵀ(y − A x) ⊘ Aᵀ(A 1) (element-wise division).

    Invariant to a scaling of the back-projector. Pixels where Aᵀ(A 1) vanishes (outside every ray)
    are left unchanged (the reference divides by zero there).
    """
    w = op.normal(torch.ones_like(x))
    upd = op.adjoint(y - op.forward(x))
    if upd.is_complex():
        upd = upd.real
    safe = w.abs() > 1e-12 * w.abs().max()
    return x + torch.where(safe, upd / torch.where(safe, w, torch.ones_like(w)), torch.zeros_like(x))
