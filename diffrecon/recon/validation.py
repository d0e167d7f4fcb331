"""Fail-fast checks on user data, run once at the entry of a solver (not in hot loops)."""

from __future__ import annotations

import torch

from ..errors import InputDataError


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise :class:`InputDataError` if ``t`` is not a tensor or holds NaN/Inf (says how many and where)."""
    if not isinstance(t, torch.Tensor):
        raise InputDataError(f"{what}: expected a torch.Tensor, found {type(t).__name__}")
    if t.numel() == 0:
        raise InputDataError(f"{what}: expected a non-empty tensor, found shape {tuple(t.shape)}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        n = int(bad.sum())
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise InputDataError(
            f"{what}: expected finite values, found {n} NaN/Inf entr{'y' if n == 1 else 'ies'} "
            f"(first at index {first}) in a tensor of shape {tuple(t.shape)}"
        )
