r"""One volume's slices sharded over ``torch.distributed`` ranks, with the same result as one process.

Rank r of W holds the contiguous slice block ``[lo_r, hi_r)`` (:func:`shard_bounds`; the first
``n mod W`` ranks get one extra slice) and runs the solver on it: the network only ever sees local
slices, and the only couplings between blocks are

* **inner products** of the volume-wide CG (ADMM-TV x-update) and of the Langevin step sizes: local
  partial sums, ``all_reduce``\ d;
* **the slice-axis difference** :math:`(D_z x)_k = x_{k+1} - x_k` and its adjoint: each application
  exchanges one boundary slice with each neighbour (a *halo* of width 1; ranks 0 and W−1 wrap around
  for the periodic boundary), done with one ``all_gather`` of every rank's first and last slice;
* **random numbers**: every rank draws the noise of the whole volume from the same seeded generator
  and keeps its block, so the samples are those of a single process (at the cost of generating
  ``n_slices × H × W`` numbers per draw on every rank).

The result equals the single-process one up to the rounding of the reordered sums (tested with two
``gloo`` processes on CPU: max abs. difference ~1e-6 in [0, 1] images).

Multi-GPU, one node (``torchrun`` sets the rank environment)::

    torchrun --standalone --nproc_per_node=4 my_recon.py

with ``my_recon.py``::

    import os, torch, torch.distributed as dist
    from diffrecon.recon import DDS
    from diffrecon.recon.distributed import solve_sharded

    dist.init_process_group("nccl")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    # every rank loads the same y (D, n_angles, n_det), operator and prior, moved to `device`
    x, record = solve_sharded(DDS.paper_ct(prior, n_views=8, progress=dist.get_rank() == 0), y, A)
    if dist.get_rank() == 0:
        save_nifti(...)  # x is the whole volume on every rank (gather=True)
    dist.destroy_process_group()

(use ``"gloo"`` on CPU). Several nodes: ``torchrun --nnodes=N --nproc_per_node=G --rdzv_backend=c10d
--rdzv_endpoint=HOST:PORT my_recon.py``.
"""

from __future__ import annotations

import torch

from ..errors import InputDataError
from ..operators.base import LinearOperator
from ..operators.slicewise import SliceWise
from .diffusion import DiffusionSolver, LocalComm, Reconstruction

Tensor = torch.Tensor


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous block of ``n`` slices (sizes differ by at most one)."""
    if n < world_size:
        raise InputDataError(
            f"cannot shard {n} slices over {world_size} ranks: every rank needs at least one"
        )
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class DistComm(LocalComm):
    """Communicator over a ``torch.distributed`` process group (already initialised).

    Args:
        n_total: slices of the whole volume.
        group: process group (default: the world).
    """

    def __init__(self, n_total: int, group=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise InputDataError(
                "DistComm: torch.distributed is not initialised (call init_process_group first)"
            )
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.n_total = int(n_total)
        self.lo, self.hi = shard_bounds(self.n_total, self.world_size, self.rank)

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    @property
    def is_last(self) -> bool:
        return self.rank == self.world_size - 1

    def sum(self, t: Tensor) -> Tensor:
        out = t.detach().clone()
        self.dist.all_reduce(out, group=self.group)
        return out

    def edges(self, x: Tensor, axis: int = 0) -> tuple[Tensor, Tensor]:
        """The neighbours' boundary entries along ``axis``: ``(previous rank's last, next rank's first)``,
        each of size 1 on ``axis``; ranks 0 and W−1 are neighbours (periodic wrap)."""
        n = x.shape[axis]
        mine = torch.cat([x.narrow(axis, 0, 1), x.narrow(axis, n - 1, 1)], dim=axis).contiguous()
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        self.dist.all_gather(parts, mine, group=self.group)
        prev_last = parts[(self.rank - 1) % self.world_size].narrow(axis, 1, 1)
        next_first = parts[(self.rank + 1) % self.world_size].narrow(axis, 0, 1)
        return prev_last, next_first

    def gather(self, x: Tensor, axis: int = 0) -> Tensor:
        """Concatenate every rank's block along ``axis`` (blocks may differ in size by one)."""
        sizes = [shard_bounds(self.n_total, self.world_size, r) for r in range(self.world_size)]
        width = max(hi - lo for lo, hi in sizes)
        xm = x.movedim(axis, 0)
        pad = torch.zeros((width, *xm.shape[1:]), dtype=x.dtype, device=x.device)
        pad[: xm.shape[0]] = xm
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        self.dist.all_gather(parts, pad.contiguous(), group=self.group)
        full = torch.cat([p[: hi - lo] for p, (lo, hi) in zip(parts, sizes, strict=True)])
        return full.movedim(0, axis)


def solve_sharded(
    solver: DiffusionSolver,
    y: Tensor,
    operator: LinearOperator,
    *,
    group=None,
    gather: bool = True,
    **solve_kwargs,
) -> Reconstruction:
    """Run ``solver`` on this rank's block of slices; call it on every rank with the same arguments.

    Args:
        solver: a :class:`~diffrecon.recon.diffusion.DiffusionSolver` (DDS, DiffusionMBIR, DPS), built
            identically on every rank (same seed and settings).
        y: the *whole* volume's measurements ``(D, …)`` (slice index first, as ``SliceWise`` returns them).
        operator: the ``SliceWise`` volume operator.
        group: process group.
        gather: return the whole volume on every rank (else this rank's block).
        **solve_kwargs: passed to ``solver.solve`` (``save_state``/``resume`` paths should differ per rank).

    Returns:
        :class:`~diffrecon.recon.diffusion.Reconstruction`; ``record.slice_evaluations`` counts all ranks.
    """
    if not isinstance(operator, SliceWise):
        raise InputDataError(f"solve_sharded: expected a SliceWise operator, found {type(operator).__name__}")
    n = int(y.shape[0])
    comm = DistComm(n, group)
    local_op = (
        SliceWise(operator.op2d, axis=operator.axis) if operator.in_shape[operator.axis] != -1 else operator
    )
    x, rec = solver.solve(y[comm.lo : comm.hi], local_op, comm=comm, n_total=n, **solve_kwargs)
    rec.slice_evaluations = rec.nfe * n
    if gather:
        x = comm.gather(x, axis=operator.axis)
    return Reconstruction(x, rec)
