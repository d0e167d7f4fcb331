"""Krylov kernels shared by operators (``pinv``) and solvers: batched conjugate gradient, power method.

Inner products are taken over the trailing ``n_dims`` axes only, so every leading index is an
independent system solved in lock-step (one CG per slice, per batch element, ...). Pass
``n_dims=x.ndim`` for one global system (DiffusionMBIR's volume-wide CG).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputDataError

Tensor = torch.Tensor


def inner(a: Tensor, b: Tensor, n_dims: int) -> Tensor:
    """Real part of ⟨a, b⟩ = Σ conj(a)·b over the trailing ``n_dims`` axes, kept for broadcasting."""
    dims = tuple(range(-n_dims, 0))
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.sum(dim=dims, keepdim=True).real


def conjugate_gradient(
    apply_normal: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    n_iter: int = 20,
    tol: float = 0.0,
    n_dims: int | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
    dot: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Solve ``M x = b`` for a Hermitian positive semi-definite ``M`` given as a function.

    Args:
        apply_normal: x ↦ M x, shape-preserving.
        b: right-hand side, shape ``(..., *dims)``.
        x0: warm start (zeros if None).
        n_iter: maximum number of CG iterations.
        tol: stop when every system's residual norm ‖r‖ ≤ tol·‖b‖ (0 runs all iterations, which keeps
            the cost and the result independent of data, as DiffusionMBIR's fixed-count CG does).
        n_dims: how many trailing axes form one system (default: all axes, one global system).
        callback: called as ``callback(k, x)`` after iteration k.
        dot: inner product to use instead of the per-system one over ``n_dims`` axes; it must
            return a tensor that broadcasts against ``b`` (e.g. a scalar summed over the ranks of a
            distributed volume).

    Returns:
        The iterate after at most ``n_iter`` steps, shape of ``b``.
    """
    if int(n_iter) < 1:
        raise InputDataError(f"conjugate gradient: expected n_iter >= 1, found {n_iter}")
    n_dims = b.ndim if n_dims is None else n_dims
    if dot is None:
        def dot(u: Tensor, v: Tensor) -> Tensor:
            return inner(u, v, n_dims)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_normal(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = dot(r, r)
    b_norm2 = dot(b, b) if tol > 0 else None
    tiny = torch.finfo(rs.dtype).tiny
    for k in range(n_iter):
        if tol > 0 and bool((rs <= (tol**2) * b_norm2).all()):
            break
        Ap = apply_normal(p)
        pAp = dot(p, Ap)
        # Converged systems have pAp == 0; freeze them instead of dividing by zero.
        alpha = torch.where(pAp > tiny, rs / pAp.clamp_min(tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = dot(r, r)
        beta = torch.where(rs > tiny, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
        if callback is not None:
            callback(k, x)
    return x


def power_method(
    apply_normal: Callable[[Tensor], Tensor],
    x0: Tensor,
    n_iter: int = 50,
    generator: torch.Generator | None = None,
) -> float:
    """Largest eigenvalue of a Hermitian PSD map (‖A‖² when given AᴴA), by power iteration."""
    x = x0 / x0.norm()
    lam = 0.0
    for _ in range(n_iter):
        y = apply_normal(x)
        lam = float(inner(x, y, x.ndim).item())
        n = y.norm()
        if float(n) == 0.0:
            return 0.0
        x = y / n
    return lam
