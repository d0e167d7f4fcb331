"""Elementary operators: element-wise masks and finite differences."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..comm import Communicator
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

    **Sharded axis.** With a communicator ``comm`` (:class:`~diffrecon.comm.LocalComm` or
    :class:`~diffrecon.recon.distributed.DistComm`) the differenced axis is taken to be split over
    ranks in contiguous blocks: each application exchanges one boundary entry with each neighbour (a
    halo of width 1), so every rank computes exactly its block of the whole array's difference. The
    first and last blocks of the whole array get the boundary rule above. On one process (or with a
    single-rank communicator) the result is that of the plain operator. Collectives are not
    differentiated through: use the sharded form for solver iterations, not inside autograd.

    Args:
        axis: tensor axis to difference along; negative values count from the end (recommended,
            so leading batch dimensions do not shift it).
        boundary: ``"neumann"`` or ``"periodic"``.
        shape: optional trailing shape the operator is for; ``None`` accepts any shape.
        comm: communicator over whose ranks ``axis`` is sharded (``None``: not sharded).

    Example:
        >>> import torch
        >>> from diffrecon.operators import FiniteDifference
        >>> FiniteDifference(-1, "periodic")(torch.tensor([1.0, 2.0, 4.0]))
        tensor([ 1.,  2., -3.])
    """

    def __init__(
        self,
        axis: int = -1,
        boundary: str = "neumann",
        shape: Sequence[int] | None = None,
        comm: Communicator | None = None,
    ):
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
        self.comm = comm

    @property
    def _sharded(self) -> bool:
        return self.comm is not None and int(getattr(self.comm, "world_size", 1)) > 1

    def _forward(self, x):
        if self._sharded:
            return self._forward_sharded(x)
        if self.boundary == "periodic":
            return torch.roll(x, -1, dims=self.axis) - x
        d = torch.zeros_like(x)
        n = x.shape[self.axis]
        d.narrow(self.axis, 0, n - 1).copy_(x.narrow(self.axis, 1, n - 1) - x.narrow(self.axis, 0, n - 1))
        return d

    def _adjoint(self, y):
        if self._sharded:
            return self._adjoint_sharded(y)
        if self.boundary == "periodic":
            return torch.roll(y, 1, dims=self.axis) - y
        n = y.shape[self.axis]
        inner = y.narrow(self.axis, 0, n - 1)  # the last entry is structurally zero
        out = torch.zeros_like(y)
        out.narrow(self.axis, 0, n - 1).sub_(inner)
        out.narrow(self.axis, 1, n - 1).add_(inner)
        return out

    # -- sharded axis: one halo entry from each neighbour ------------------------------------------
    def _forward_sharded(self, x):
        a, n = self.axis, x.shape[self.axis]
        _, nxt = self.comm.edges(x, a)
        d = torch.empty_like(x)
        d.narrow(a, 0, n - 1).copy_(x.narrow(a, 1, n - 1) - x.narrow(a, 0, n - 1))
        if self.boundary == "neumann" and self.comm.is_last:
            d.narrow(a, n - 1, 1).zero_()
        else:
            d.narrow(a, n - 1, 1).copy_(nxt - x.narrow(a, n - 1, 1))
        return d

    def _adjoint_sharded(self, y):
        a, n = self.axis, y.shape[self.axis]
        prv, _ = self.comm.edges(y, a)
        out = -y
        if self.boundary == "neumann" and self.comm.is_last:
            out.narrow(a, n - 1, 1).zero_()  # the last difference is structurally zero
        out.narrow(a, 1, n - 1).add_(y.narrow(a, 0, n - 1))
        if not (self.boundary == "neumann" and self.comm.is_first):
            out.narrow(a, 0, 1).add_(prv)
        return out

    def extra_repr(self) -> str:
        sharded = ", sharded" if self.comm is not None else ""
        return f"axis={self.axis}, boundary={self.boundary!r}, shape={self.in_shape}{sharded}"


class MoveAxis(LinearOperator):
    """Move one axis of the domain to another position: ``x ↦ movedim(x, source, destination)``.

    A permutation of entries, so the adjoint (moving the axis back) is also its inverse. ``source`` and
    ``destination`` index the ``len(in_shape)`` trailing (domain) axes; leading batch axes pass through.
    Solvers use it to see a volume "slice-first": ``A @ MoveAxis(0, 2, (S, H, W))`` is an operator on
    ``(S, H, W)`` volumes for an ``A`` whose volumes have their slices on axis 2.

    Args:
        source: domain axis to move (0 … n−1, or negative).
        destination: where it goes.
        in_shape: the domain shape (``-1`` entries accepted for any size).

    Example:
        >>> import torch
        >>> from diffrecon.operators import MoveAxis
        >>> MoveAxis(0, 2, (4, 5, 6))(torch.zeros(4, 5, 6)).shape
        torch.Size([5, 6, 4])
    """

    def __init__(self, source: int, destination: int, in_shape: Sequence[int]):
        in_shape = tuple(int(s) for s in in_shape)
        n = len(in_shape)
        for name, a in (("source", source), ("destination", destination)):
            if not -n <= int(a) < n:
                raise InputDataError(f"MoveAxis: {name} axis {a} out of range for a {n}-D domain {in_shape}")
        self.source, self.destination = int(source) % n, int(destination) % n
        out = list(in_shape)
        out.insert(self.destination, out.pop(self.source))
        super().__init__(in_shape, tuple(out))
        self.n_dims = n

    def _forward(self, x):
        lead = x.ndim - self.n_dims
        return x.movedim(lead + self.source, lead + self.destination)

    def _adjoint(self, y):
        lead = y.ndim - self.n_dims
        return y.movedim(lead + self.destination, lead + self.source)

    def extra_repr(self) -> str:
        return f"source={self.source}, destination={self.destination}, in_shape={self.in_shape}"
