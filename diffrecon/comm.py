"""Communicators: which block of a volume's slices this process holds, and how blocks talk.

A solver on a volume sharded over ranks (:mod:`diffrecon.recon.distributed`) sees only its contiguous
block of slices ``[lo, lo + n_local)`` of ``n_total``. Everything that couples blocks goes through a
communicator: sums of inner products (:meth:`LocalComm.sum`), the neighbouring boundary slices of a
finite difference along the sharded axis (:meth:`LocalComm.edges`, used by
:class:`~diffrecon.operators.FiniteDifference` with ``comm=``), and the whole volume at the end
(:meth:`LocalComm.gather`). :class:`LocalComm` is the single-process case;
:class:`~diffrecon.recon.distributed.DistComm` runs over ``torch.distributed``. They live at the
package root because both operators (the sharded :class:`~diffrecon.operators.FiniteDifference`) and
solvers use them.
"""

from __future__ import annotations

from typing import Protocol

import torch

Tensor = torch.Tensor


class Communicator(Protocol):
    """What sharded code needs from a communicator (:class:`LocalComm`, ``DistComm``)."""

    rank: int
    world_size: int
    lo: int
    n_total: int | None

    @property
    def is_first(self) -> bool: ...

    @property
    def is_last(self) -> bool: ...

    def sum(self, t: Tensor) -> Tensor: ...

    def edges(self, x: Tensor, axis: int = 0) -> tuple[Tensor, Tensor]: ...

    def gather(self, x: Tensor, axis: int = 0) -> Tensor: ...


class LocalComm:
    """Single-process communicator: the local block is the whole volume.

    Args:
        n_total: number of slices of the whole volume (set by the solver when ``None``).
    """

    rank = 0
    world_size = 1

    def __init__(self, n_total: int | None = None):
        self.n_total = n_total
        self.lo = 0

    @property
    def is_first(self) -> bool:
        """Whether this block holds the first slice of the volume."""
        return self.lo == 0

    @property
    def is_last(self) -> bool:
        """Whether this block holds the last slice of the volume."""
        return True

    def sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over ranks (identity here)."""
        return t

    def edges(self, x: Tensor, axis: int = 0) -> tuple[Tensor, Tensor]:
        """``(entry before the block, entry after the block)`` along ``axis`` (each of size 1 there),
        wrapping around at the ends of the volume."""
        n = x.shape[axis]
        return x.narrow(axis, n - 1, 1), x.narrow(axis, 0, 1)

    def gather(self, x: Tensor, axis: int = 0) -> Tensor:
        """The whole volume from every rank's block (identity here)."""
        return x
