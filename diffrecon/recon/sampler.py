r"""The one sampler skeleton shared by the diffusion solvers (DDS, DiffusionMBIR, DPS, 2D-only diffusion).

A solver reconstructs a **volume** ``x`` of shape ``(D, H, W)`` (with the slice axis where the operator
says, see below) from measurements ``y = A x + n`` using a **2-D**
:class:`~diffrecon.priors.prior.DiffusionPrior`
applied to every slice. Everything that is not the method itself lives here:

* the timestep loop (:meth:`DiffusionSolver.solve`), one call of the subclass' :meth:`_step` per step;
* the network calls, chunked over slices (``chunk_size`` slices per call, so memory stays bounded
  whatever the volume size) and counted (**NFE** = network evaluations per slice, the papers' count;
  ``slice_evaluations`` = NFE × slices);
* one seeded ``torch.Generator`` for every random draw (same seed → identical output). Noise is
  always drawn for the *whole* volume and then cut to the local slice block, so a volume sharded
  over ranks (:mod:`diffrecon.recon.distributed`) sees exactly the noise of a single process;
* a tqdm progress bar (``progress=False`` silences it) and an ``on_step(i, x, info)`` callback;
* state save / resume: ``save_state=PATH`` writes the loop state (iterate, split variables, generator
  state, counters) atomically every ``save_every`` steps and when the loop is interrupted;
  ``resume=PATH`` continues from it to the same result as an uninterrupted run;
* fail-fast validation before any network call: measurements finite, measurement shape matching the
  operator's geometry, slices matching the prior's image size (:class:`~diffrecon.errors.InputDataError`);
* a :class:`SolveRecord` (method, NFE, seconds, settings) returned next to the estimate.

Layout and units
----------------
Internally the volume is kept **slice-first**, ``(S, H, W)``: the operator is wrapped so that the
slice axis of a :class:`~diffrecon.operators.SliceWise` operator (its ``axis``) comes first; any other
operator with a 3-D domain is taken to have its slices on axis 0. The estimate is returned in the
operator's own layout. Images are in *image units*; the prior works in its model space
``z = prior.normalise(x / image_scale)``, so ``image_scale`` is the image value that corresponds to the
top of the prior's data range (1.0 for images in [0, 1], the DiffusionMBIR/DDS convention).
Regularisation weights (λ, ρ, γ, ζ) are defined for the problem in the prior's data units:
the solvers divide ``y`` by ``image_scale`` and multiply the result back.

Data consistency with variable sharing
--------------------------------------
:class:`SharedADMMTV` is one ADMM iteration of

.. math::  \min_x \tfrac12\|A x - y\|_2^2 + \lambda \textstyle\sum_a \|D_a x\|_1,
           \qquad d_a = D_a x \text{ (split)},\; u_a \text{ (scaled dual)}

whose split variables ``(d, u)`` persist across diffusion steps (DiffusionMBIR's "variable sharing"):
x ← ``cg_iter`` CG steps (warm start at the given image) on
:math:`(A^\top A + \rho \sum_a D_a^\top D_a)\,x = A^\top y + \rho \sum_a D_a^\top(d_a - u_a)`,
then :math:`d_a ← \mathrm{soft}(D_a x + u_a, \lambda/\rho)`, :math:`u_a ← u_a + D_a x - d_a`.
It is numerically the same iteration as :class:`diffrecon.recon.classical.ADMMTV` (tested), written
against a communicator so that inner products and the slice-axis differences work on a volume sharded
over ``torch.distributed`` ranks (halo exchange of one boundary slice per neighbour).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from ..errors import InputDataError
from ..operators.base import LinearOperator, shapes_compatible
from ..operators.elementary import BOUNDARIES
from ..operators.linalg import conjugate_gradient
from ..operators.slicewise import SliceWise
from .classical import soft_threshold
from .validation import check_finite

Tensor = torch.Tensor

STATE_FORMAT = "diffrecon-solver-state/1"

#: names of TV axes in the slice-first layout ``(S, H, W)``.
AXIS_NAMES = {"z": -3, "slice": -3, "y": -2, "x": -1}


# ------------------------------------------------------------------------------------------------
# communicators: single process (here) and torch.distributed (diffrecon.recon.distributed)
# ------------------------------------------------------------------------------------------------
class LocalComm:
    """Single-process communicator: the local block is the whole volume.

    A communicator tells a solver which slices ``[lo, lo + n_local)`` of ``n_total`` it holds, sums
    scalars over ranks (:meth:`sum`) and returns the neighbouring boundary slices (:meth:`edges`).
    """

    rank = 0
    world_size = 1

    def __init__(self, n_total: int | None = None):
        self.n_total = n_total
        self.lo = 0

    @property
    def is_first(self) -> bool:
        return self.lo == 0

    @property
    def is_last(self) -> bool:
        return True

    def sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over ranks (identity here)."""
        return t

    def edges(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(slice before the block, slice after the block)`` with periodic wrap at the volume ends."""
        return x[-1], x[0]

    def gather(self, x: Tensor) -> Tensor:
        """The whole volume from every rank's block (identity here)."""
        return x


# ------------------------------------------------------------------------------------------------
# data-consistency machinery
# ------------------------------------------------------------------------------------------------
class SliceDifference:
    """Forward difference along the slice axis (axis −3) of a possibly sharded slice-first volume.

    ``(D x)[k] = x[k+1] − x[k]``; at the last slice of the volume ``x[0] − x[n−1]`` (``"periodic"``,
    DiffusionMBIR's wrap-around ``Dz``) or 0 (``"neumann"``). :meth:`adjoint` is the exact adjoint.
    Matches :class:`~diffrecon.operators.FiniteDifference` ``(axis=-3)`` on one process.
    """

    def __init__(self, boundary: str, comm: LocalComm):
        if boundary not in BOUNDARIES:
            raise InputDataError(f"TV boundary must be one of {BOUNDARIES}, found {boundary!r}")
        self.boundary = boundary
        self.comm = comm

    def forward(self, x: Tensor) -> Tensor:
        _, nxt = self.comm.edges(x)
        d = torch.empty_like(x)
        d[:-1] = x[1:] - x[:-1]
        if self.boundary == "neumann" and self.comm.is_last:
            d[-1] = 0
        else:
            d[-1] = nxt - x[-1]
        return d

    def adjoint(self, y: Tensor) -> Tensor:
        prv, _ = self.comm.edges(y)
        out = -y
        if self.boundary == "neumann" and self.comm.is_last:
            out[-1] = 0  # the last difference is structurally zero; its entry of y is ignored
        out[1:] += y[:-1]
        if not (self.boundary == "neumann" and self.comm.is_first):
            out[0] += prv
        return out


class _InPlaneDifference:
    """Finite difference along an in-plane axis (−2 or −1): purely local."""

    def __init__(self, axis: int, boundary: str):
        from ..operators.elementary import FiniteDifference

        self.op = FiniteDifference(axis, boundary)

    def forward(self, x):
        return self.op.forward(x)

    def adjoint(self, y):
        return self.op.adjoint(y)


def global_cg(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor,
    n_iter: int,
    dot: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``n_iter`` CG steps on ``M x = b`` from ``x0`` with a caller-supplied inner product ``dot``.

    The same recursion as :func:`diffrecon.operators.linalg.conjugate_gradient` with ``tol=0`` (a fixed
    step count, so the cost and the result do not depend on the data). ``dot`` returns a tensor that
    broadcasts against ``b``: a scalar for one global system (summed over ranks), or ``(S, 1, 1)`` for
    one system per slice.
    """
    return conjugate_gradient(apply, b, x0=x0, n_iter=int(n_iter), tol=0.0, dot=dot)


class SharedADMMTV:
    r"""One-iteration-per-call ADMM-TV with split variables shared across calls (see module docstring).

    Args:
        aty: :math:`A^\top y`, slice-first ``(S, H, W)`` (the local block).
        normal: :math:`v \mapsto A^\top A v` on the local block.
        lam: TV weight λ > 0 (units of ½‖Ax − y‖²).
        rho: ADMM penalty ρ > 0.
        axes: axes carrying TV, as names (``"z"``, ``"y"``, ``"x"``) or negative indices of the
            slice-first layout (−3 = across slices). DiffusionMBIR/DDS: ``("z",)``.
        boundary: ``"periodic"`` (the reference code's wrap-around) or ``"neumann"``.
        cg_iter: CG steps per x-update (DiffusionMBIR 1, DDS 5).
        comm: communicator (:class:`LocalComm` by default).
    """

    def __init__(
        self,
        aty: Tensor,
        normal: Callable[[Tensor], Tensor],
        lam: float,
        rho: float,
        axes: Sequence[str | int] = ("z",),
        boundary: str = "periodic",
        cg_iter: int = 1,
        comm: LocalComm | None = None,
    ):
        for name, v in (("lam", lam), ("rho", rho)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputDataError(f"ADMM-TV: expected {name} > 0, found {v!r}")
        if int(cg_iter) < 1:
            raise InputDataError(f"ADMM-TV: expected cg_iter >= 1, found {cg_iter}")
        self.comm = comm or LocalComm()
        self.aty, self.normal = aty, normal
        self.lam, self.rho, self.cg_iter = float(lam), float(rho), int(cg_iter)
        self.axes = resolve_axes(axes)
        self.diffs = [
            SliceDifference(boundary, self.comm) if a == -3 else _InPlaneDifference(a, boundary)
            for a in self.axes
        ]
        self.d = [torch.zeros_like(aty) for _ in self.axes]
        self.u = [torch.zeros_like(aty) for _ in self.axes]

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        return self.comm.sum((a * b).sum())

    def _lhs(self, v: Tensor) -> Tensor:
        out = self.normal(v)
        for D in self.diffs:
            out = out + self.rho * D.adjoint(D.forward(v))
        return out

    def step(self, x: Tensor) -> Tensor:
        """One ADMM iteration warm-started at ``x`` (slice-first); returns the new image."""
        rhs = self.aty
        for D, d, u in zip(self.diffs, self.d, self.u, strict=True):
            rhs = rhs + self.rho * D.adjoint(d - u)
        x = global_cg(self._lhs, rhs, x, self.cg_iter, self.dot)
        thr = self.lam / self.rho
        for i, D in enumerate(self.diffs):
            dx = D.forward(x)
            self.d[i] = soft_threshold(dx + self.u[i], thr)
            self.u[i] = self.u[i] + dx - self.d[i]
        return x

    def state_dict(self) -> dict[str, Tensor]:
        out = {}
        for i, (d, u) in enumerate(zip(self.d, self.u, strict=True)):
            out[f"d{i}"], out[f"u{i}"] = d, u
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for i in range(len(self.d)):
            self.d[i] = state[f"d{i}"].to(self.aty)
            self.u[i] = state[f"u{i}"].to(self.aty)


def resolve_axes(axes: Sequence[str | int] | str | None) -> tuple[int, ...]:
    """TV axes as negative indices of the slice-first layout; ``"all"`` = (−3, −2, −1)."""
    if axes is None or axes == "all":
        return (-3, -2, -1)
    if isinstance(axes, (str, int)):
        axes = (axes,)
    out = []
    for a in axes:
        if isinstance(a, str):
            if a not in AXIS_NAMES:
                raise InputDataError(f"TV axis names are {sorted(AXIS_NAMES)} or 'all', found {a!r}")
            a = AXIS_NAMES[a]
        a = int(a)
        if a not in (-3, -2, -1):
            raise InputDataError(f"TV axes must be -3 (slices), -2 or -1, found {a}")
        if a not in out:
            out.append(a)
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# operator in slice-first layout
# ------------------------------------------------------------------------------------------------
class SliceFirst(LinearOperator):
    """``x_sf ↦ A(x_sf.movedim(0, axis))``: an operator seen with its slices on axis 0 (a permutation,
    so still matched). ``op2d`` is the per-slice operator when ``A`` is a :class:`SliceWise`."""

    def __init__(self, operator: LinearOperator, axis: int):
        in_shape = operator.in_shape
        sf = None if in_shape is None else (in_shape[axis], *[s for i, s in enumerate(in_shape) if i != axis])
        super().__init__(sf, operator.out_shape)
        self.op = operator
        self.axis = axis
        self.op2d = operator.op2d if isinstance(operator, SliceWise) else None

    def to_volume(self, x: Tensor) -> Tensor:
        return x.movedim(x.ndim - 3, x.ndim - 3 + self.axis)

    def to_slices(self, x: Tensor) -> Tensor:
        return x.movedim(x.ndim - 3 + self.axis, x.ndim - 3)

    def _forward(self, x):
        return self.op.forward(self.to_volume(x))

    def _adjoint(self, y):
        return self.to_slices(self.op.adjoint(y))

    def normal(self, x):
        return self.to_slices(self.op.normal(self.to_volume(x)))


def slice_axis_of(operator: LinearOperator) -> int:
    """The slice axis of an operator's 3-D domain: ``SliceWise.axis``, else 0."""
    return operator.axis if isinstance(operator, SliceWise) else 0


# ------------------------------------------------------------------------------------------------
# record and context
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SolveRecord:
    """What a solver did: written next to the output by the CLI (``record.to_dict()`` is JSON-ready).

    Attributes:
        method: solver name (``"dds"``, ``"diffusion_mbir"``, ``"dps"``, ``"dds_2d"``).
        nfe: network evaluations per slice (the count diffusion papers report).
        slice_evaluations: 2-D network forwards in total (nfe × slices).
        seconds: wall-clock time of the loop (summed over resumed parts).
        steps: number of sampler steps.
        seed: generator seed.
        settings: the solver's hyperparameters.
        resumed_at: step index the run was resumed from (None for a fresh run).
    """

    method: str
    nfe: int
    slice_evaluations: int
    seconds: float
    steps: int
    seed: int
    settings: dict
    resumed_at: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Reconstruction(NamedTuple):
    """``(image, record)``: the estimate in image units and the operator's layout, and its record."""

    image: Tensor
    record: SolveRecord


@dataclasses.dataclass
class Context:
    """Per-solve quantities shared by the hooks of a solver (all in the slice-first layout)."""

    y: Tensor  # measurements / image_scale
    op: SliceFirst
    shape: tuple[int, int, int]  # local (S, H, W)
    comm: LocalComm
    n_total: int
    device: torch.device
    dtype: torch.dtype
    timesteps: Tensor
    generator: torch.Generator
    extra: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# the skeleton
# ------------------------------------------------------------------------------------------------
class DiffusionSolver:
    """Base class: subclasses implement :meth:`_timesteps`, :meth:`_init`, :meth:`_step`, :meth:`_finish`.

    Args:
        prior: a 2-D :class:`~diffrecon.priors.prior.DiffusionPrior` (1 channel).
        steps: number of sampler steps.
        seed: seed of the solver's generator.
        chunk_size: slices per network call (bounds memory; does not change the result beyond float
            rounding of batched convolutions).
        image_scale: image value corresponding to the top of the prior's data range.
        progress: show a tqdm progress bar.
        on_step: ``on_step(i, x, info)`` after each step, with the current clean estimate ``x`` (image
            units, operator layout, local block when sharded) and ``info`` (``t``, ``nfe``).
    """

    method = "diffusion"

    def __init__(
        self,
        prior,
        steps: int,
        *,
        seed: int = 0,
        chunk_size: int = 16,
        image_scale: float = 1.0,
        progress: bool = True,
        on_step: Callable[[int, Tensor, dict], Any] | None = None,
    ):
        if int(steps) < 1:
            raise InputDataError(f"{type(self).__name__}: expected steps >= 1, found {steps}")
        if int(chunk_size) < 1:
            raise InputDataError(f"{type(self).__name__}: expected chunk_size >= 1, found {chunk_size}")
        if not (math.isfinite(image_scale) and image_scale > 0):
            raise InputDataError(f"{type(self).__name__}: expected image_scale > 0, found {image_scale}")
        self.prior = prior
        self.steps = int(steps)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.image_scale = float(image_scale)
        self.progress = bool(progress)
        self.on_step = on_step
        self._nfe = 0
        self._slice_evals = 0

    # -- hooks ----------------------------------------------------------------------------------
    def settings(self) -> dict:
        """Hyperparameters (JSON-ready), stored in the record and checked on resume."""
        return {"steps": self.steps, "seed": self.seed, "image_scale": self.image_scale}

    def _timesteps(self) -> Tensor:
        raise NotImplementedError

    def _init(self, ctx: Context) -> dict[str, Tensor]:
        raise NotImplementedError

    def _step(self, i: int, state: dict[str, Tensor], ctx: Context) -> dict[str, Tensor]:
        raise NotImplementedError

    def _estimate(self, state: dict[str, Tensor], ctx: Context) -> Tensor:
        """Current clean estimate (slice-first, prior data units) for ``on_step``."""
        return state["x0"]

    def _finish(self, state: dict[str, Tensor], ctx: Context) -> Tensor:
        return state["x0"]

    def _dc_state(self, ctx: Context) -> dict[str, Tensor]:
        """Extra persistent state (ADMM split variables); saved and restored with the loop state."""
        return {}

    def _load_dc_state(self, ctx: Context, state: dict[str, Tensor]) -> None:
        pass

    # -- helpers for subclasses -----------------------------------------------------------------
    def randn(self, ctx: Context) -> Tensor:
        """Standard normal noise for the local block, drawn for the whole volume (rank-independent)."""
        s, h, w = ctx.shape
        full = torch.randn(
            (ctx.n_total, h, w), generator=ctx.generator, device=ctx.generator.device, dtype=ctx.dtype
        )
        return full[ctx.comm.lo : ctx.comm.lo + s].to(ctx.device)

    def predict(
        self, x_t: Tensor, t: Tensor | float, ctx: Context, grad: bool = False
    ) -> tuple[Tensor, Tensor]:
        """One network evaluation of every local slice: ``(z0_hat, eps_hat)``, both ``(S, H, W)`` model space.

        Slices go through the network ``chunk_size`` at a time. Counts one NFE.
        """
        outs_z, outs_e = [], []
        with torch.set_grad_enabled(grad):
            for chunk in torch.split(x_t, self.chunk_size, dim=0):
                tt = torch.full((chunk.shape[0],), float(t), device=chunk.device)
                if ctx.extra.get("discrete_t"):
                    tt = tt.round().long()
                z0, eps = self.prior.predict(chunk.unsqueeze(1), tt)
                outs_z.append(z0[:, 0])
                outs_e.append(eps[:, 0])
        self._nfe += 1
        self._slice_evals += x_t.shape[0]
        return torch.cat(outs_z), torch.cat(outs_e)

    def to_model(self, x: Tensor) -> Tensor:
        """Image (prior data units) → model space."""
        return self.prior.normalise(x)

    def to_image(self, z: Tensor) -> Tensor:
        """Model space → image (prior data units)."""
        return self.prior.denormalise(z)

    def alpha_sigma(self, t) -> tuple[float, float]:
        """``(a_t, s_t)`` of the prior's schedule at one time (Python floats, float64 precision)."""
        a, s = self.prior.schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
        return float(a), float(s)

    # -- validation -----------------------------------------------------------------------------
    def _validate(self, y: Tensor, operator: LinearOperator) -> tuple[int, tuple[int, int, int]]:
        """Fail fast (before any network call). Returns the slice axis and the slice-first shape."""
        if not isinstance(operator, LinearOperator):
            raise InputDataError(
                f"{self.method}: expected a diffrecon LinearOperator, found {type(operator).__name__}"
            )
        check_finite(y, "measurements")
        out_shape, in_shape = operator.out_shape, operator.in_shape
        if in_shape is None or len(in_shape) != 3:
            raise InputDataError(
                f"{self.method}: expected an operator on 3-D volumes (e.g. SliceWise(op2d)), "
                f"found in_shape {in_shape}"
            )
        if out_shape is not None:
            if y.ndim != len(out_shape) or not shapes_compatible(tuple(y.shape), out_shape):
                geo = getattr(getattr(operator, "op2d", operator), "geometry", None)
                hint = f" (geometry: {geo!r})" if geo is not None else ""
                raise InputDataError(
                    f"{self.method}: measurements of shape {tuple(y.shape)} do not match the operator's "
                    f"measurement shape {out_shape} (-1 = any number of slices){hint}; one volume per call"
                )
        axis = slice_axis_of(operator)
        plane = tuple(s for i, s in enumerate(in_shape) if i != axis)
        n = in_shape[axis]
        if n == -1:
            n = int(y.shape[0]) if isinstance(operator, SliceWise) else -1
        if n < 1 or -1 in plane:
            raise InputDataError(f"{self.method}: cannot tell the volume shape from in_shape {in_shape}")
        ishape = getattr(self.prior, "image_shape", None)
        if ishape is not None:
            if tuple(ishape[-2:]) != tuple(plane):
                raise InputDataError(
                    f"{self.method}: the prior was trained on {ishape[-2]}×{ishape[-1]} images but the "
                    f"operator's "
                    f"slices are {plane[0]}×{plane[1]}; resample the data or use a prior of that size"
                )
            if len(ishape) == 3 and ishape[0] != 1:
                raise InputDataError(f"{self.method}: expected a 1-channel prior, found image_shape {ishape}")
        return axis, (n, *plane)

    # -- the loop -------------------------------------------------------------------------------
    @torch.no_grad()
    def solve(
        self,
        y: Tensor,
        operator: LinearOperator,
        *,
        save_state: str | os.PathLike | None = None,
        save_every: int = 1,
        resume: str | os.PathLike | None = None,
        comm: LocalComm | None = None,
        n_total: int | None = None,
        stop_after: int | None = None,
    ) -> Reconstruction:
        """Reconstruct the volume from ``y``.

        Args:
            y: measurements, shape ``operator.out_shape`` (one volume; for CT ``(D, n_angles, n_det)``,
                for multi-coil MRI ``(D, C, H, W)`` complex).
            operator: forward model on volumes, e.g. ``SliceWise(ParallelBeam2D(...))``.
            save_state: write the loop state here every ``save_every`` steps and on interruption.
            save_every: steps between state writes.
            resume: continue from a state written by ``save_state`` (same solver settings and data).
            comm: communicator when the volume is sharded (see :mod:`diffrecon.recon.distributed`).
            n_total: total slices of the sharded volume (defaults to the local count).
            stop_after: run at most this many steps of this call, then return the current estimate
                (for staged runs; with ``save_state`` the state is written first).

        Returns:
            :class:`Reconstruction` ``(image, record)``; the image has the operator's domain layout.

        Raises:
            InputDataError: non-finite measurements, a measurement shape that does not match the
                operator, slices whose size differs from the prior's, a state file from another run.
        """
        axis, shape = self._validate(y, operator)
        if hasattr(self.prior, "eval"):
            self.prior.eval()
        comm = comm or LocalComm(shape[0])
        n_total = int(n_total or shape[0])
        comm.n_total = n_total
        op = SliceFirst(operator, axis)
        device = y.device
        dtype = y.real.dtype if y.is_complex() else y.dtype
        if dtype not in (torch.float32, torch.float64):
            dtype = torch.float32
        g = torch.Generator(device=device).manual_seed(self.seed)
        ctx = Context(
            y=y / self.image_scale,
            op=op,
            shape=shape,
            comm=comm,
            n_total=n_total,
            device=device,
            dtype=dtype,
            timesteps=self._timesteps(),
            generator=g,
            extra={"discrete_t": bool(getattr(self.prior.schedule, "discrete", False))},
        )
        self._check_operator_domain(ctx)
        self._nfe = self._slice_evals = 0
        state = self._init(ctx)
        start, seconds_before, resumed_at = 0, 0.0, None
        if resume is not None:
            start, seconds_before, state = self._load(resume, ctx, state)
            resumed_at = start
        n = len(ctx.timesteps)
        end = n if stop_after is None else min(n, start + int(stop_after))
        t0 = time.perf_counter()
        bar = tqdm(total=n, initial=start, desc=self.method, disable=not self.progress, leave=False)
        # Snapshot of the last completed step (tensors are never modified in place, so references suffice):
        # an interruption anywhere inside a step saves a consistent state.
        done, snap = start, (state, ctx.generator.get_state(), dict(self._dc_state(ctx)), self._nfe)
        saved = start
        try:
            for i in range(start, end):
                state = self._step(i, state, ctx)
                done, snap = i + 1, (state, ctx.generator.get_state(), dict(self._dc_state(ctx)), self._nfe)
                bar.update(1)
                if save_state is not None and ((i + 1) % max(1, int(save_every)) == 0 or i + 1 == end):
                    self._save(save_state, done, snap, ctx, seconds_before + time.perf_counter() - t0)
                    saved = done
                if self.on_step is not None:
                    est = op.to_volume(self._estimate(state, ctx)) * self.image_scale
                    self.on_step(i, est, {"t": float(ctx.timesteps[i]), "nfe": self._nfe})
        except BaseException:
            if save_state is not None and done > saved:
                self._save(save_state, done, snap, ctx, seconds_before + time.perf_counter() - t0)
            raise
        finally:
            bar.close()
        x = self._finish(state, ctx) if end == n else self._estimate(state, ctx)
        image = op.to_volume(x) * self.image_scale
        seconds = seconds_before + time.perf_counter() - t0
        rec = SolveRecord(
            method=self.method,
            nfe=self._nfe,
            slice_evaluations=self._nfe * n_total,
            seconds=round(seconds, 3),
            steps=n,
            seed=self.seed,
            settings=self.settings(),
            resumed_at=resumed_at,
        )
        return Reconstruction(image, rec)

    __call__ = solve

    def _check_operator_domain(self, ctx: Context) -> None:
        probe = ctx.op.adjoint(ctx.y)
        if probe.is_complex():
            raise InputDataError(
                f"{self.method}: the operator's image domain is complex but the prior is real-valued; "
                "build the MRI operator with real_input=True (magnitude images, as in DiffusionMBIR)"
            )
        if tuple(probe.shape) != tuple(ctx.shape):
            raise InputDataError(
                f"{self.method}: operator adjoint gives shape {tuple(probe.shape)}, expected {ctx.shape}"
            )
        ctx.extra["aty"] = probe.to(ctx.dtype)

    # -- state files ----------------------------------------------------------------------------
    def _fingerprint(self, ctx: Context) -> dict:
        return {
            "method": self.method,
            "settings": self.settings(),
            "shape": list(ctx.shape),
            "n_total": ctx.n_total,
            "lo": ctx.comm.lo,
            "y_sum": float(ctx.y.abs().double().sum()),
        }

    def _save(self, path, step: int, snap: tuple, ctx: Context, seconds: float) -> None:
        from ..io.atomic import atomic_path

        state, gen, dc, nfe = snap
        blob = {
            "format": STATE_FORMAT,
            "step": int(step),
            "seconds": float(seconds),
            "nfe": int(nfe),
            "fingerprint": self._fingerprint(ctx),
            "generator": gen,
            "state": {k: v.detach().cpu() for k, v in state.items()},
            "dc": {k: v.detach().cpu() for k, v in dc.items()},
        }
        with atomic_path(path, overwrite=True, suffix=".pt") as tmp:
            torch.save(blob, tmp)

    def _load(self, path, ctx: Context, state: dict):
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises OSError, RuntimeError, KeyError, pickle errors … on bad files
            raise InputDataError(f"{self.method}: cannot read the solver state {path}: {exc!r}") from exc
        keys = ("fingerprint", "generator", "nfe", "state", "dc", "step", "seconds")
        if (not isinstance(blob, dict) or blob.get("format") != STATE_FORMAT
                or any(k not in blob for k in keys)):
            raise InputDataError(f"{self.method}: {path} is not a diffrecon solver state ({STATE_FORMAT})")
        if blob["generator"].numel() != ctx.generator.get_state().numel():
            raise InputDataError(
                f"{self.method}: state {path} was written on another device type (its random generator "
                f"state does not fit a {ctx.device.type} generator); resume on the device it was saved on"
            )
        want, found = self._fingerprint(ctx), blob["fingerprint"]
        for key in ("method", "settings", "shape", "n_total", "lo"):
            if want[key] != found.get(key):
                raise InputDataError(
                    f"{self.method}: state {path} comes from another run: {key} was "
                    f"{found[key]!r}, now {want[key]!r}"
                )
        if not math.isclose(want["y_sum"], found["y_sum"], rel_tol=1e-6, abs_tol=1e-12):
            raise InputDataError(f"{self.method}: state {path} was written for different measurements")
        ctx.generator.set_state(blob["generator"])
        self._nfe = int(blob["nfe"])
        new = {k: v.to(device=ctx.device) for k, v in blob["state"].items()}
        self._load_dc_state(ctx, {k: v.to(ctx.device) for k, v in blob["dc"].items()})
        return int(blob["step"]), float(blob["seconds"]), new


# ------------------------------------------------------------------------------------------------
# helpers shared by the CT/MRI solvers
# ------------------------------------------------------------------------------------------------
BACKPROJECTORS = ("exact", "reference")


def n_views_of(operator: LinearOperator) -> int:
    """Number of projection angles of a (SliceWise) CT operator; raises for other operators."""
    op = operator.op if isinstance(operator, SliceFirst) else operator
    op2d = getattr(op, "op2d", op)
    geom = getattr(op2d, "geometry", None)
    n = getattr(geom, "n_angles", None)
    if n is None:
        raise InputDataError(
            f"backprojector='reference' reproduces the π/(2N)-scaled CT back-projector of the "
            f"DiffusionMBIR/DDS "
            f"code and needs a CT operator with a geometry; found {type(op2d).__name__}"
        )
    return int(n)


def reference_data_weight(operator: LinearOperator) -> float:
    r"""c = π / (2 N_views): the factor by which the reference code's "Aᵀ" (an unfiltered back-projection
    scaled like an FBP) differs from the exact adjoint. Using Aᵀ_ref = c·Aᵀ makes every data term
    c·½‖Ax − y‖²; see :func:`exact_equivalent`."""
    return math.pi / (2.0 * n_views_of(operator))


def exact_equivalent(lam: float, rho: float, n_views: int) -> tuple[float, float]:
    r"""(λ, ρ) for the exact adjoint that reproduce the reference code's (λ, ρ) and π/(2N) back-projector.

    The reference solves c·½‖Ax − y‖² + λ‖D_z x‖₁ with c = π/(2N): its x-update is
    (c AᵀA + ρ DᵀD) x = c Aᵀy + ρ Dᵀ(d − u) and its shrinkage threshold λ/ρ. Dividing the x-update by
    c gives (AᵀA + (ρ/c) DᵀD) x = Aᵀy + (ρ/c) Dᵀ(d − u), and CG iterates are invariant under scaling
    the whole system, so λ' = λ/c = λ·2N/π and ρ' = ρ/c = ρ·2N/π (same threshold λ'/ρ' = λ/ρ) give
    *identical* iterates with the exact adjoint. 8 views: λ = 0.04 → 0.2037, ρ = 10 → 50.93.
    """
    c = math.pi / (2.0 * int(n_views))
    return lam / c, rho / c


def final_data_consistency(x: Tensor, y: Tensor, op: LinearOperator, comm: LocalComm | None = None) -> Tensor:
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
