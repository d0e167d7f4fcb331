"""MONAI integration: dictionary transforms that simulate measurements and reconstruct, and an ``Inferer``.

Data layout follows MONAI: a volume is channel-first ``(1, X, Y, Z)`` (after ``LoadImaged`` +
``EnsureChannelFirstd``), with intensities in [0, 1] (``ScaleIntensityd``) and, after
``Orientationd(axcodes="RAS")``, axial slices along the **last** axis — hence ``slice_axis=2`` (an index
into the three spatial axes) by default. The 2-D prior's image size must equal the in-plane size
(``Resized``/``SpatialPadd`` to it).

* :class:`SimulateSparseViewCTd` / :class:`SimulateUndersampledMRId` read a volume key and write the
  simulated measurements (CT ``(1, D, n_angles, n_det)`` real; MRI ``(1, D, C, H, W)`` complex) to
  ``output_key`` as a ``MetaTensor`` **carrying the source volume's metadata** (affine, filename), so the
  reconstruction can be written in the source's space.
* :class:`DiffusionReconstructd` runs a solver on one item's measurements and writes the volume
  ``(1, X, Y, Z)`` with that metadata.
* :class:`DiffusionReconstructionInferer` is a :class:`monai.inferers.Inferer`: ``inferer(inputs, network)``
  with batched measurements ``(B, 1, D, …)`` and ``network`` = the prior returns ``(B, 1, X, Y, Z)``,
  a ``MetaTensor`` with the inputs' affines. MONAI's ``SupervisedEvaluator`` accepts it (with the
  measurements under ``"image"`` and the truth under ``"label"``).

MetaTensors are unwrapped to plain tensors before any solver (custom autograd) call. Each transform
or inferer rebuilds the forward operator from a :class:`ProblemSpec` (the same seeded mask, coil maps
and geometry the simulation used; built from the acquisition settings alone, see
:mod:`diffrecon.recon.problems`). Needs the ``monai`` package (a core dependency) and, for
``SupervisedEvaluator``, ``pytorch-ignite``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch

from .errors import InputDataError, require

Tensor = torch.Tensor

_monai = require("monai", "monai")
from monai.config import KeysCollection  # noqa: E402
from monai.data import MetaTensor  # noqa: E402
from monai.inferers import Inferer  # noqa: E402
from monai.transforms import MapTransform  # noqa: E402


@dataclasses.dataclass
class ProblemSpec:
    """How measurements are simulated from, and related to, a volume (see :mod:`diffrecon.recon.problems`).

    Attributes:
        modality: ``"ct"`` or ``"mri"``.
        slice_axis: spatial axis (0, 1, 2 of ``(X, Y, Z)``) the 2-D prior's slices are taken along.
        params: keyword arguments of :func:`~diffrecon.recon.problems.ct_problem` (``n_views``, ``beam``,
            ``limited_angle_degrees``, ``noise``, ``seed``) or :func:`~diffrecon.recon.problems.mri_problem`
            (``acceleration``, ``mask``, ``center_fraction``, ``calib``, ``n_coils``, ``snr_db``, ``seed``).
    """

    modality: str
    slice_axis: int = 2
    params: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.modality not in ("ct", "mri"):
            raise InputDataError(f"ProblemSpec: modality must be 'ct' or 'mri', found {self.modality!r}")
        if self.slice_axis not in (0, 1, 2):
            raise InputDataError(f"ProblemSpec: slice_axis must be 0, 1 or 2, found {self.slice_axis}")

    def simulate(self, volume: Tensor):
        """A :class:`~diffrecon.recon.problems.Problem` for a 3-D volume, by
        :func:`~diffrecon.recon.problems.ct_problem` / :func:`~diffrecon.recon.problems.mri_problem`."""
        from .recon.problems import ct_problem, mri_problem

        build = ct_problem if self.modality == "ct" else mri_problem
        return build(volume, slice_axis=self.slice_axis, **self.params)

    def operator(self, n_slices: int, plane: Sequence[int], device=None):
        """The forward operator for a volume of ``n_slices`` slices of size ``plane``: the operator
        :meth:`simulate` uses (same geometry, or same seeded mask and coil maps), built without any data
        (:func:`~diffrecon.recon.problems.problem_operator`)."""
        from .recon.problems import problem_operator

        op = problem_operator(
            self.modality, plane, slice_axis=self.slice_axis, n_slices=int(n_slices), **self.params
        )
        return op.to(device or "cpu")


def _plain(t) -> Tensor:
    return t.as_tensor() if isinstance(t, MetaTensor) else torch.as_tensor(t)


def _with_meta(x: Tensor, like) -> Tensor:
    if isinstance(like, MetaTensor):
        meta = {k: v for k, v in like.meta.items() if k != "affine"}
        out = MetaTensor(x, affine=like.affine.clone(), meta=meta)
        out.is_batch = like.is_batch
        return out
    return x


class _Simulate(MapTransform):
    spec: ProblemSpec

    def __init__(self, keys: KeysCollection, output_key: str, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            v = _plain(img)
            if v.ndim != 4 or v.shape[0] != 1:
                raise InputDataError(
                    f"{type(self).__name__}: expected a channel-first volume (1, X, Y, Z) under "
                    f"{key!r}, found shape {tuple(v.shape)}"
                )
            prob = self.spec.simulate(v[0].to(torch.float32))
            d[self.output_key] = _with_meta(prob.y.unsqueeze(0), img)
        return d


class SimulateSparseViewCTd(_Simulate):
    """Simulate sparse-view (or limited-angle) CT of every slice of ``keys`` → ``output_key``.

    Args:
        keys: volume key(s), ``(1, X, Y, Z)`` in [0, 1].
        output_key: where the sinogram ``(1, D, n_angles, n_det)`` goes (a MetaTensor with the volume's meta).
        n_views: projection angles (uniform over 180° parallel, 360° fan).
        beam: ``"parallel"`` or ``"fan"``.
        limited_angle_degrees: e.g. 90 for the limited-angle wedge (1° steps; overrides ``n_views``).
        noise: Gaussian noise σ relative to max |y|.
        seed: noise seed.
        slice_axis: spatial axis of the slices (2 = axial after ``Orientationd("RAS")``).
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_key: str = "image",
        n_views: int = 8,
        beam: str = "parallel",
        limited_angle_degrees: float | None = None,
        noise: float = 0.0,
        seed: int = 0,
        slice_axis: int = 2,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, output_key, allow_missing_keys)
        self.spec = ProblemSpec(
            "ct",
            slice_axis,
            dict(
                n_views=n_views,
                beam=beam,
                limited_angle_degrees=limited_angle_degrees,
                noise=noise,
                seed=seed,
            ),
        )


class SimulateUndersampledMRId(_Simulate):
    """Simulate undersampled multi-coil Cartesian MRI of every slice of ``keys`` → ``output_key``.

    Args:
        keys: volume key(s), ``(1, X, Y, Z)`` in [0, 1] (magnitude).
        output_key: where the k-space ``(1, D, C, H, W)`` (complex64) goes.
        acceleration: target undersampling factor (sampled fraction ≈ 1/acceleration).
        mask: mask family, one of :data:`~diffrecon.datasets.mri_simulation.MASKS`.
        center_fraction: fully sampled central fraction of the phase-encode lines (1-D masks).
        calib: calibration box side of ``poisson2d`` (see :func:`~diffrecon.recon.problems.mri_problem`).
        n_coils: birdcage receive coils C.
        snr_db: SNR in dB, 10·log10(P/σ²) with P the mean |F S_c x|² over slices, coils and the full
            k-space grid (see :mod:`diffrecon.datasets.mri_simulation`); None = noiseless.
        seed: mask and noise seed.
        slice_axis: spatial axis of the slices.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_key: str = "image",
        acceleration: float = 4.0,
        mask: str = "uniform1d",
        center_fraction: float = 0.08,
        calib: int | None = None,
        n_coils: int = 8,
        snr_db: float | None = None,
        seed: int = 0,
        slice_axis: int = 2,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, output_key, allow_missing_keys)
        self.spec = ProblemSpec(
            "mri",
            slice_axis,
            dict(
                acceleration=acceleration,
                mask=mask,
                center_fraction=center_fraction,
                calib=calib,
                n_coils=n_coils,
                snr_db=snr_db,
                seed=seed,
            ),
        )


def _make_solver(solver, prior):
    from .recon.diffusion import DiffusionSolver

    if isinstance(solver, DiffusionSolver):
        return solver
    if callable(solver):
        return solver(prior)
    raise InputDataError(
        f"expected a DiffusionSolver or a factory prior -> solver, found {type(solver).__name__}"
    )


def _reconstruct_one(solver, spec: ProblemSpec, y: Tensor, plane: Sequence[int]):
    """y: (D, …) plain measurements of one volume → ((X, Y, Z), record)."""
    op = spec.operator(y.shape[0], plane, y.device)
    return solver(y, op)


class DiffusionReconstructd(MapTransform):
    """Reconstruct each item's measurements under ``keys`` with a diffusion solver → ``output_key``.

    Args:
        keys: measurement key(s) written by a ``Simulate…d`` transform (``(1, D, …)``).
        solver: a :class:`~diffrecon.recon.diffusion.DiffusionSolver` (DDS, DiffusionMBIR, …), or a
            factory ``prior -> DiffusionSolver`` together with ``prior``.
        spec: the simulating transform's ``spec``.
        output_key: where the volume ``(1, X, Y, Z)`` goes (a MetaTensor with the measurement's meta).
        record_key: where the solver's record (a dict) goes, or None.
        prior: the prior a solver factory is called with (a transform has no evaluator network).
    """

    def __init__(
        self,
        keys: KeysCollection,
        solver,
        spec: ProblemSpec,
        output_key: str = "pred",
        record_key: str | None = "pred_record",
        allow_missing_keys: bool = False,
        prior=None,
    ):
        from .recon.diffusion import DiffusionSolver

        super().__init__(keys, allow_missing_keys)
        if not isinstance(solver, DiffusionSolver):
            if not callable(solver) or prior is None:
                raise InputDataError(
                    "DiffusionReconstructd: pass a DiffusionSolver, or a factory prior -> solver together "
                    f"with prior=...; found {type(solver).__name__} and prior={type(prior).__name__}"
                )
            solver = _make_solver(solver, prior)
        self.solver, self.spec = solver, spec
        self.output_key, self.record_key = output_key, record_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            y = _plain(d[key])
            if y.ndim < 3 or y.shape[0] != 1:
                raise InputDataError(
                    f"DiffusionReconstructd: expected measurements (1, D, …) under {key!r}, "
                    f"found shape {tuple(y.shape)}"
                )
            solver = self.solver
            plane = tuple(solver.prior.image_shape[-2:])
            x, rec = _reconstruct_one(solver, self.spec, y[0], plane)
            d[self.output_key] = _with_meta(x.unsqueeze(0), d[key])
            if self.record_key:
                d[self.record_key] = rec.to_dict()
        return d


class DiffusionReconstructionInferer(Inferer):
    """A MONAI ``Inferer``: batched measurements → reconstructed volumes.

    ``inferer(inputs, network)`` with ``inputs`` ``(B, 1, D, …)`` (plain tensor or MetaTensor) and ``network``
    a :class:`~diffrecon.priors.prior.DiffusionPrior` returns ``(B, 1, X, Y, Z)``, a MetaTensor with the
    inputs' metadata (affines) when the inputs were MetaTensors. Records of the last call are kept in
    ``self.records``.

    Args:
        solver: a factory ``prior -> DiffusionSolver`` (uses the evaluator's network), or a solver.
        spec: the simulating transform's ``spec`` (geometry / mask / coils of the measurements).
    """

    def __init__(self, solver: Callable | Any, spec: ProblemSpec):
        super().__init__()
        self.solver, self.spec = solver, spec
        self.records: list[dict] = []

    def __call__(self, inputs: Tensor, network: Callable, *args: Any, **kwargs: Any) -> Tensor:
        y = _plain(inputs)
        if y.ndim < 4 or y.shape[1] != 1:
            raise InputDataError(
                f"DiffusionReconstructionInferer: expected measurements (B, 1, D, …), found "
                f"shape {tuple(y.shape)}"
            )
        solver = _make_solver(self.solver, network)
        plane = tuple(solver.prior.image_shape[-2:])
        outs, self.records = [], []
        for b in range(y.shape[0]):
            x, rec = _reconstruct_one(solver, self.spec, y[b, 0], plane)
            outs.append(x.unsqueeze(0))
            self.records.append(rec.to_dict())
        return _with_meta(torch.stack(outs), inputs)


__all__ = [
    "DiffusionReconstructd",
    "DiffusionReconstructionInferer",
    "ProblemSpec",
    "SimulateSparseViewCTd",
    "SimulateUndersampledMRId",
]
