r"""The one solver skeleton every diffusion method stands on (pixel and latent priors).

A solver reconstructs a **volume** ``x`` of shape ``(D, H, W)`` (with the slice axis where the operator
says) from measurements ``y = A x + n`` with a 2-D prior (:class:`~diffrecon.priors.Prior`: a
pixel-space :class:`~diffrecon.priors.DiffusionPrior` or a :class:`~diffrecon.priors.LatentPrior`)
applied to every slice. A method is a subclass that implements four hooks,

* :meth:`DiffusionSolver.timesteps` — the descending time grid;
* :meth:`DiffusionSolver.init_state` — its typed loop state (a :class:`~.state.SolverState` dataclass);
* :meth:`DiffusionSolver.step` — one step ``state → state``;
* :meth:`DiffusionSolver.settings` — its hyperparameters (recorded and checked on resume);

and everything else lives here:

* the timestep loop (:meth:`DiffusionSolver.solve`), with a tqdm progress bar (``progress=False``
  silences it) and an ``on_step(i, x, info)`` callback;
* network calls chunked over slices (``chunk_size`` per call, so memory stays bounded) and counted:
  **NFE** = network evaluations per slice (the papers' count), ``slice_evaluations`` = NFE × slices;
  :meth:`DiffusionSolver.predict` with an optional **guidance** loss returns its gradient with
  respect to the network input through the Tweedie estimate (and through the decoder of a latent
  prior), which is all DPS, latent DPS, PSLD and STSL need;
* one seeded generator for every random draw (:meth:`DiffusionSolver.randn`), drawn for the *whole*
  volume and cut to the local block, so a volume sharded over ranks sees a single process's noise;
* fail-fast validation (:meth:`DiffusionSolver.validate`) before any network call;
* state save / resume (``save_state=``, ``resume=``; :mod:`~diffrecon.recon.diffusion.state`);
* a :class:`~diffrecon.recon.diffusion.records.SolveRecord` next to the estimate.

Layout and units
----------------
The volume is kept **slice-first**, ``(S, H, W)``: the operator is composed with a
:class:`~diffrecon.operators.MoveAxis` so that the slice axis of a
:class:`~diffrecon.operators.SliceWise` operator comes first (other operators with a 3-D domain have
their slices on axis 0). The diffusion state ``x_t`` has shape ``(S, *prior.state_shape)``: ``(S, 1, H, W)``
for a pixel prior, ``(S, c, h, w)`` latents for a latent prior. Images are in *image units*; the prior
works in its model space ``z = prior.encode(x / image_scale)``, so ``image_scale`` is the image value of
the top of the prior's data range (1.0 for images in [0, 1]). Regularisation weights (λ, ρ, γ, ζ) are
defined for the problem in the prior's data units: solvers divide ``y`` by ``image_scale`` and multiply the
result back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

import torch
from tqdm.auto import tqdm

from ...comm import LocalComm
from ...errors import InputDataError
from ...operators.base import LinearOperator, shapes_compatible
from ...operators.elementary import MoveAxis
from ...operators.slicewise import SliceWise
from ...priors.interface import Prior
from ..validation import check_finite
from .records import Reconstruction, SolveRecord
from .state import Snapshot, SolverState, load_state, module_sha256, tensor_sha256
from .state import save_state as write_state

Tensor = torch.Tensor
S = TypeVar("S", bound=SolverState)

#: names of TV axes in the slice-first layout ``(S, H, W)``.
AXIS_NAMES = {"z": -3, "slice": -3, "y": -2, "x": -1}

Guidance = Callable[[Tensor, slice], Tensor]
"""``loss(z0, rows) -> scalar``: a measurement loss of a chunk's Tweedie estimate ``z0`` (model space,
``(n, *state_shape)``) for the local slices ``rows``; :meth:`DiffusionSolver.predict` differentiates it
with respect to the chunk's network input."""


def resolve_axes(axes) -> tuple[int, ...]:
    """TV axes as negative indices of the slice-first layout; ``"all"`` = (−3, −2, −1)."""
    if axes is None or axes == "all":
        return (-3, -2, -1)
    if isinstance(axes, (str, int)):
        axes = (axes,)
    out: list[int] = []
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


def slice_axis_of(operator: LinearOperator) -> int:
    """The slice axis of an operator's 3-D domain: ``SliceWise.axis``, else 0."""
    return operator.axis if isinstance(operator, SliceWise) else 0


class Prediction(NamedTuple):
    """One network evaluation of every local slice (model space, ``(S, *state_shape)``).

    Attributes:
        z0: Tweedie's estimate :math:`\\hat z_0 = \\mathbb E[z_0\\mid x_t]`.
        eps: the noise estimate :math:`\\hat\\varepsilon`.
        grad: ∇ of the guidance loss with respect to ``x_t`` (``None`` without guidance).
    """

    z0: Tensor
    eps: Tensor
    grad: Tensor | None = None


@dataclasses.dataclass
class SolveContext:
    """Per-solve quantities shared by a solver's hooks (all slice-first, local block when sharded).

    Attributes:
        y: measurements divided by ``image_scale``.
        operator: the operator as the caller gave it (its own layout).
        op: the same operator on slice-first volumes ``(S, H, W)``.
        op2d: the per-slice 2-D operator when ``operator`` is a ``SliceWise`` (else ``None``).
        aty: :math:`A^\\top y` (slice-first, real, the solve's dtype).
        shape: local image shape ``(S, H, W)``.
        state_shape: local diffusion-state shape ``(S, *prior.state_shape)``.
        comm: communicator (:class:`LocalComm` on one process).
        n_total: slices of the whole volume.
        device, dtype: of the solve.
        timesteps: the time grid.
        generator: the seeded generator of every random draw.
    """

    y: Tensor
    operator: LinearOperator
    op: LinearOperator
    op2d: LinearOperator | None
    aty: Tensor
    shape: tuple[int, int, int]
    state_shape: tuple[int, ...]
    comm: LocalComm
    n_total: int
    device: torch.device
    dtype: torch.dtype
    timesteps: Tensor
    generator: torch.Generator
    to_volume: Callable[[Tensor], Tensor]


class DiffusionSolver(Generic[S]):
    """Base class of the diffusion solvers (module docstring: what it provides; subclasses: the hooks).

    Args:
        prior (Prior): a 2-D :class:`~diffrecon.priors.Prior` with one image channel (pixel or latent).
        steps: number of sampler steps.
        seed: seed of the solver's generator.
        chunk_size: slices per network call (bounds memory; does not change the result beyond float
            rounding of batched convolutions).
        image_scale: image value corresponding to the top of the prior's data range.
        progress: show a tqdm progress bar.
        on_step: ``on_step(i, x, info)`` after each step, with the current clean estimate ``x`` (image
            units, operator layout, local block when sharded) and ``info`` (``t``, ``nfe``).

    A minimal method (unguided DDIM that ignores the data) is a few lines::

        @dataclasses.dataclass
        class DDIMState(SolverState):
            x_t: torch.Tensor

        class UnconditionalDDIM(DiffusionSolver[DDIMState]):
            method = "ddim"
            def timesteps(self):
                return self.prior.schedule.ddim_timesteps(self.steps)
            def init_state(self, ctx):
                x_t = self.randn(ctx)
                return DDIMState(x0=torch.zeros(ctx.shape, dtype=ctx.dtype), x_t=x_t)
            def step(self, i, state, ctx):
                t, t_next = self.time_pair(i, ctx)
                z0, eps, _ = self.predict(state.x_t, t, ctx)
                return DDIMState(x0=self.to_image(z0), x_t=self.ddim_step(z0, eps, t, t_next))
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
        name = type(self).__name__
        if int(steps) < 1:
            raise InputDataError(f"{name}: expected steps >= 1, found {steps}")
        if int(chunk_size) < 1:
            raise InputDataError(f"{name}: expected chunk_size >= 1, found {chunk_size}")
        if not (math.isfinite(image_scale) and image_scale > 0):
            raise InputDataError(f"{name}: expected image_scale > 0, found {image_scale}")
        if not isinstance(prior, Prior):
            missing = [a for a in ("schedule", "encode", "decode", "predict", "ddim_step", "state_shape")
                       if not hasattr(prior, a)]
            raise InputDataError(
                f"{name}: expected a diffrecon Prior (DiffusionPrior or LatentPrior), found "
                f"{type(prior).__name__} (missing: {', '.join(missing) or 'see diffrecon.priors.Prior'})"
            )
        self.prior = prior
        self.steps = int(steps)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.image_scale = float(image_scale)
        self.progress = bool(progress)
        self.on_step = on_step
        self._nfe = 0

    # -- hooks ----------------------------------------------------------------------------------
    def settings(self) -> dict:
        """Hyperparameters (JSON-ready), stored in the record and checked on resume."""
        return {"steps": self.steps, "seed": self.seed, "image_scale": self.image_scale}

    def timesteps(self) -> Tensor:
        """The descending time grid of the loop (one :meth:`step` per entry)."""
        raise NotImplementedError

    def init_state(self, ctx: SolveContext) -> S:
        """The loop state before the first step (also rebuilt, then overwritten, on resume)."""
        raise NotImplementedError

    def step(self, i: int, state: S, ctx: SolveContext) -> S:
        """Step ``i`` of the loop; must not modify ``state``'s tensors in place."""
        raise NotImplementedError

    def estimate(self, state: S, ctx: SolveContext) -> Tensor:
        """Current clean estimate (slice-first, prior data units) for ``on_step`` and staged runs."""
        return state.x0

    def finish(self, state: S, ctx: SolveContext) -> Tensor:
        """The result after the last step (default: :meth:`estimate`)."""
        return self.estimate(state, ctx)

    # -- helpers for subclasses -----------------------------------------------------------------
    def randn(self, ctx: SolveContext) -> Tensor:
        """Standard normal noise of the local state's shape, drawn for the whole volume (rank-independent)."""
        full = torch.randn(
            (ctx.n_total, *ctx.state_shape[1:]), generator=ctx.generator, device=ctx.generator.device,
            dtype=ctx.dtype,
        )
        return full[ctx.comm.lo : ctx.comm.lo + ctx.shape[0]].to(ctx.device)

    def predict(
        self, x_t: Tensor, t: Tensor | float, ctx: SolveContext, guidance: Guidance | None = None
    ) -> Prediction:
        """One network evaluation of every local slice (counts one NFE), ``chunk_size`` slices per call.

        With ``guidance``, each chunk's network call is recorded by autograd and
        ``grad = ∇_{x_t} guidance(ẑ0(x_t), rows)`` is returned too (the memory of one chunk's backward).
        """
        zs, es, gs = [], [], []
        discrete = bool(getattr(self.prior.schedule, "discrete", False))
        start = 0
        for chunk in torch.split(x_t, self.chunk_size, dim=0):
            n = chunk.shape[0]
            tt = torch.full((n,), float(t), device=chunk.device)
            if discrete:
                tt = tt.round().long()
            if guidance is None:
                z0, eps = self.prior.predict(chunk, tt)
            else:
                with torch.enable_grad():
                    xc = chunk.detach().requires_grad_(True)
                    z0, eps = self.prior.predict(xc, tt)
                    loss = guidance(z0, slice(start, start + n))
                    (grad,) = torch.autograd.grad(loss, xc)
                z0, eps = z0.detach(), eps.detach()
                gs.append(grad)
            zs.append(z0)
            es.append(eps)
            start += n
        self._nfe += 1
        return Prediction(torch.cat(zs), torch.cat(es), torch.cat(gs) if gs else None)

    def to_model(self, x: Tensor) -> Tensor:
        """Images ``(S, H, W)`` (prior data units) → model space ``(S, *state_shape)`` (the encoder)."""
        if self._latent:
            return torch.cat([self.prior.encode(c.unsqueeze(1)) for c in torch.split(x, self.chunk_size)])
        return self.prior.encode(x.unsqueeze(-3))

    def to_image(self, z: Tensor) -> Tensor:
        """Model space ``(S, *state_shape)`` → images ``(S, H, W)`` (prior data units; the decoder)."""
        if self._latent:
            return torch.cat([self.prior.decode(c)[:, 0] for c in torch.split(z, self.chunk_size)])
        return self.prior.decode(z).squeeze(-3)

    @property
    def _latent(self) -> bool:
        return bool(getattr(self.prior, "is_latent", False))

    def alpha_sigma(self, t) -> tuple[float, float]:
        """``(a_t, s_t)`` of the prior's schedule at one time (Python floats, float64 precision)."""
        a, s = self.prior.schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
        return float(a), float(s)

    def time_pair(self, i: int, ctx: SolveContext) -> tuple[float, float | None]:
        """``(t_i, t_{i+1})`` as floats; ``t_{i+1}`` is ``None`` at the last step."""
        ts = ctx.timesteps
        return float(ts[i]), (float(ts[i + 1]) if i + 1 < len(ts) else None)

    def ddim_step(self, z0: Tensor, eps: Tensor, t: float, t_next: float | None, eta: float = 0.0,
                  ctx: SolveContext | None = None, mixing: str = "ddim") -> Tensor:
        """The prior's DDIM update (:meth:`~diffrecon.priors.DiffusionPrior.ddim_step`), noise from the
        solver's generator (drawn only when the step is stochastic)."""
        noise = None if ctx is None else (lambda: self.randn(ctx))
        return self.prior.ddim_step(z0, eps, t, t_next, eta=eta, noise=noise, mixing=mixing)

    def model_range(self) -> tuple[float, float]:
        """The prior's data range (``prior.data_range``, default [0, 1]) in model space (pixel priors)."""
        lo, hi = getattr(self.prior, "data_range", (0.0, 1.0))
        a, b = (float(self.prior.encode(torch.tensor(float(v)))) for v in (lo, hi))
        return min(a, b), max(a, b)

    # -- validation -----------------------------------------------------------------------------
    def validate(self, y: Tensor, operator: LinearOperator) -> tuple[int, tuple[int, int, int]]:
        """Fail fast, before any network call: the measurements, the operator and the prior must fit.

        Returns:
            The operator's slice axis and the slice-first volume shape ``(S, H, W)``.

        Raises:
            InputDataError: a non-diffrecon operator, non-finite measurements, a measurement shape that
                does not match the operator, or slices whose size differs from the prior's.
        """
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
                    f"operator's slices are {plane[0]}×{plane[1]}; resample the data or use a prior of "
                    "that size"
                )
            if len(ishape) == 3 and ishape[0] != 1:
                raise InputDataError(f"{self.method}: expected a 1-channel prior, found image_shape {ishape}")
        return axis, (n, *plane)

    def _state_shape(self, shape: tuple[int, int, int]) -> tuple[int, ...]:
        sshape = getattr(self.prior, "state_shape", None)
        if sshape is None:
            sshape = (1, *shape[1:])
        return (shape[0], *tuple(sshape))

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
            :class:`~diffrecon.recon.diffusion.records.Reconstruction` ``(image, record)``; the image has
            the operator's domain layout.

        Raises:
            InputDataError: see :meth:`validate`; also a state file from another run.
        """
        axis, shape = self.validate(y, operator)
        if hasattr(self.prior, "eval"):
            self.prior.eval()
        ctx = self._context(y, operator, axis, shape, comm, n_total)
        self._nfe = 0
        state = self.init_state(ctx)
        start, seconds_before, resumed_at = 0, 0.0, None
        fingerprint = self._fingerprint(ctx) if (resume is not None or save_state is not None) else None
        if resume is not None:
            blob = load_state(resume, self.method, fingerprint, ctx.generator, n_steps=len(ctx.timesteps))
            ctx.generator.set_state(blob["generator"])
            self._nfe = int(blob["nfe"])
            state.load_tensors(blob["state"], ctx.device)
            start = resumed_at = int(blob["step"])
            seconds_before = float(blob["seconds"])
        n = len(ctx.timesteps)
        end = n if stop_after is None else min(n, start + int(stop_after))
        t0 = time.perf_counter()
        bar = tqdm(total=n, initial=start, desc=self.method, disable=not self.progress, leave=False)

        def snapshot(done: int) -> Snapshot:
            return Snapshot(done, state.tensors(), ctx.generator.get_state(), self._nfe)

        snap, saved = snapshot(start), start
        try:
            for i in range(start, end):
                state = self.step(i, state, ctx)
                snap = snapshot(i + 1)
                bar.update(1)
                if save_state is not None and ((i + 1) % max(1, int(save_every)) == 0 or i + 1 == end):
                    write_state(save_state, snap, fingerprint,
                                    seconds_before + time.perf_counter() - t0)
                    saved = snap.step
                if self.on_step is not None:
                    est = ctx.to_volume(self.estimate(state, ctx)) * self.image_scale
                    self.on_step(i, est, {"t": float(ctx.timesteps[i]), "nfe": self._nfe})
        except BaseException:
            if save_state is not None and snap.step > saved:
                write_state(save_state, snap, fingerprint,
                                seconds_before + time.perf_counter() - t0)
            raise
        finally:
            bar.close()
        x = self.finish(state, ctx) if end == n else self.estimate(state, ctx)
        image = ctx.to_volume(x) * self.image_scale
        seconds = seconds_before + time.perf_counter() - t0
        rec = SolveRecord(
            method=self.method,
            nfe=self._nfe,
            slice_evaluations=self._nfe * ctx.n_total,
            seconds=round(seconds, 3),
            steps=n,
            seed=self.seed,
            settings=self.settings(),
            resumed_at=resumed_at,
        )
        return Reconstruction(image, rec)

    __call__ = solve

    def _context(self, y, operator, axis, shape, comm, n_total) -> SolveContext:
        comm = comm or LocalComm(shape[0])
        n_total = int(n_total or shape[0])
        comm.n_total = n_total
        if axis == 0:
            op, to_volume = operator, (lambda v: v)
        else:
            move = MoveAxis(axis, 0, _domain(operator, shape[0]))  # operator layout → slice-first
            op = operator @ move.H
            to_volume = move.adjoint
        device = y.device
        dtype = y.real.dtype if y.is_complex() else y.dtype
        if dtype not in (torch.float32, torch.float64):
            dtype = torch.float32
        ys = y / self.image_scale
        aty = op.adjoint(ys)
        if aty.is_complex():
            raise InputDataError(
                f"{self.method}: the operator's image domain is complex but the prior is real-valued; "
                "build the MRI operator with real_input=True (magnitude images, as in DiffusionMBIR)"
            )
        if tuple(aty.shape) != tuple(shape):
            raise InputDataError(
                f"{self.method}: operator adjoint gives shape {tuple(aty.shape)}, expected {shape}"
            )
        return SolveContext(
            y=ys,
            operator=operator,
            op=op,
            op2d=operator.op2d if isinstance(operator, SliceWise) else None,
            aty=aty.to(dtype),
            shape=shape,
            state_shape=self._state_shape(shape),
            comm=comm,
            n_total=n_total,
            device=device,
            dtype=dtype,
            timesteps=self.timesteps(),
            generator=torch.Generator(device=device).manual_seed(self.seed),
            to_volume=to_volume,
        )

    def _fingerprint(self, ctx: SolveContext) -> dict:
        """What a state file must match to be resumed: method, settings, shapes, this rank's slab, the
        exact measurements (SHA-256 of their bytes), the operator (its response to a fixed seeded probe,
        so other angles or another mask are caught) and the prior (SHA-256 of its weights)."""
        probe = torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            response = ctx.op(probe.to(device=ctx.device, dtype=ctx.dtype))
        return {
            "method": self.method,
            "settings": self.settings(),
            "shape": list(ctx.shape),
            "n_total": ctx.n_total,
            "lo": ctx.comm.lo,
            "data_sha256": tensor_sha256(ctx.y),
            "operator_probe": [float(response.abs().double().sum()), float(response.double().real.std())],
            "prior_sha256": module_sha256(self.prior),
        }





def _domain(operator: LinearOperator, n_slices: int) -> tuple[int, ...]:
    """The operator's 3-D domain shape with the slice count filled in."""
    axis = slice_axis_of(operator)
    return tuple(n_slices if i == axis else int(s) for i, s in enumerate(operator.in_shape))
