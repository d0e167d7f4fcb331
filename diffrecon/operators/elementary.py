"""Elementary operators: element-wise masks and finite differences."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputDataError
from .base import LinearOperator

Tensor = torch.Tensor

BOUNDARIES = ("neumann", "periodic")


class Mask(LinearOperator):
    """Element-wise multiplication by a fixed mask: (M x)[i] = m[i]·x[i]; adjoint conj(m)[i]·y[i].

    Args:
        mask: boolean or numeric tensor whose shape is the operator's ``in_shape`` (= ``out_shape``).
            Binary masks select observed entries (inpainting, k-space sampling); real weights are
            allowed too.

    Raises:
        InputDataError: for a mask with no non-zero entry or with NaN/Inf values.
    """

    def __init__(self, mask: Tensor):
        mask = torch.as_tensor(mask)
        if mask.dtype == torch.bool:
            mask = mask.to(torch.float32)
        if not torch.isfinite(mask).all():
            raise InputDataError("Mask: expected finite mask values, found NaN or Inf")
        if not bool((mask != 0).any()):
            raise InputDataError(f"Mask: expected at least one observed (non-zero) entry, "
                                 f"found an empty mask of shape {tuple(mask.shape)}")
        super().__init__(mask.shape, mask.shape)
        self.register_buffer("mask", mask)

    def _forward(self, x):
        return x * self.mask.to(x.dtype) if not x.is_complex() else x * self.mask

    def _adjoint(self, y):
        m = self.mask.conj() if self.mask.is_complex() else self.mask
        return y * m.to(y.dtype) if not y.is_complex() else y * m


class FiniteDifference(LinearOperator):
    """Forward difference along one axis: (D x)[i] = x[i+1] − x[i].

    Boundary handling of the last entry:
      * ``"neumann"``: (D x)[n−1] = 0 (no flux through the boundary; the usual TV choice);
      * ``"periodic"``: (D x)[n−1] = x[0] − x[n−1] (DiffusionMBIR's wrap-around z-difference).

    The output has the input's shape. The adjoint is the matching negative backward difference.

    Args:
        axis: tensor axis to difference along; negative values count from the end (recommended,
            so leading batch dimensions do not shift it).
        boundary: ``"neumann"`` or ``"periodic"``.
        shape: optional trailing shape the operator is for; ``None`` accepts any shape.
    """

    def __init__(self, axis: int = -1, boundary: str = "neumann", shape: Sequence[int] | None = None):
        if boundary not in BOUNDARIES:
            raise InputDataError(
                f"FiniteDifference: boundary must be one of {BOUNDARIES}, found {boundary!r}"
            )
        if shape is not None:
            n = len(tuple(shape))
            if not -n <= axis < n:
                raise InputDataError(f"FiniteDifference: axis {axis} out of range for shape {tuple(shape)}")
            axis = axis - n if axis >= 0 else axis  # count from the end so batch dims pass through
        super().__init__(shape, shape)
        self.axis = int(axis)
        self.boundary = boundary

    def _forward(self, x):
        if self.boundary == "periodic":
            return torch.roll(x, -1, dims=self.axis) - x
        d = torch.zeros_like(x)
        n = x.shape[self.axis]
        d.narrow(self.axis, 0, n - 1).copy_(x.narrow(self.axis, 1, n - 1) - x.narrow(self.axis, 0, n - 1))
        return d

    def _adjoint(self, y):
        if self.boundary == "periodic":
            return torch.roll(y, 1, dims=self.axis) - y
        n = y.shape[self.axis]
        inner = y.narrow(self.axis, 0, n - 1)  # the last entry is structurally zero
        out = torch.zeros_like(y)
        out.narrow(self.axis, 0, n - 1).sub_(inner)
        out.narrow(self.axis, 1, n - 1).add_(inner)
        return out

    def extra_repr(self) -> str:
        return f"axis={self.axis}, boundary={self.boundary!r}, shape={self.in_shape}"
