"""The volume inverse problems of the DiffusionMBIR/DDS evaluation, all through ``SliceWise`` operators.

Two layers, so an operator never needs data and data is simulated in one place per modality:

* **operators** — :func:`ct_operator` / :func:`mri_operator` build the ``SliceWise`` forward model
  (with its geometry, or its coil maps and mask) from a plane shape and the acquisition settings;
  :func:`problem_operator` does it from a problem's keyword arguments (what
  :class:`diffrecon.monai.ProblemSpec` stores);
* **problems** — :func:`ct_problem` / :func:`mri_problem` build that operator for a ground-truth volume
  ``(D, H, W)`` in [0, 1] (slices along ``slice_axis``, axial = 0 for diffrecon's ``(z, y, x)`` volumes)
  and measure it with the one simulation of the modality,
  :func:`~diffrecon.datasets.ct_simulation.simulate_ct` or
  :func:`~diffrecon.datasets.mri_simulation.simulate_mri`, returning a :class:`Problem`:

================  ==================================================================================
name              acquisition
================  ==================================================================================
``ct-sv8``        sparse-view parallel-beam CT, 8 views uniform over [0°, 180°) (also ``ct-sv4``,
                  ``ct-sv2``; DiffusionMBIR's angles ``linspace(0, 180, N, endpoint=False)``)
``ct-sv8-fan``    sparse-view fan-beam CT, 8 views over 360° (also ``-4``, ``-2``)
``ct-la90``       limited-angle parallel-beam CT, 90° wedge at 1° steps ([0°, 89°], 90 views)
``mri-u4``        multi-coil Cartesian MRI, uniform-1D ×4 with 8 % ACS lines (also ``mri-u8``, 4 %)
``mri-p4``        multi-coil Cartesian MRI, 2-D Poisson-disc ×4 with a min(24, N/4)² calibration region
================  ==================================================================================

MRI problems use 8 birdcage coil maps shared by all slices (Σ_c |S_c|² = 1), a real image domain
(``real_input=True``: the priors are real-valued magnitude priors, as in DiffusionMBIR) and the
orthonormal centred FFT of :mod:`diffrecon.operators.mri`; the mask is seeded with ``seed``. Noise is
complex Gaussian at ``snr_db`` (``None`` = noiseless) with SNR_dB = 10·log10(P/σ²), P the mean
|F₂(S_c x)|² over slices, coils and *all* k-space points (see :mod:`diffrecon.datasets.mri_simulation`),
drawn from ``seed + 1``. CT noise is white Gaussian with σ = ``noise`` × max |y|, drawn from ``seed``.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import InputDataError
from ..operators import LinearOperator, SliceWise
from .validation import check_finite

Tensor = torch.Tensor


@dataclasses.dataclass
class Problem:
    """A simulated volume problem.

    Attributes:
        name: registry name (``"ct-sv8"``, …).
        y: measurements, ``operator.out_shape`` (CT ``(D, n_angles, n_det)``; MRI ``(D, C, H, W)`` complex).
        operator: the ``SliceWise`` forward model on volumes.
        truth: the ground-truth volume (``None`` for real data).
        modality: ``"ct"`` or ``"mri"``.
        n_views: projection count (CT) or ``None``.
        noise_sigma: absolute noise standard deviation added to ``y``.
        info: acquisition details (geometry dict, acceleration, …).
    """

    name: str
    y: Tensor
    operator: LinearOperator
    truth: Tensor | None
    modality: str
    n_views: int | None
    noise_sigma: float
    info: dict

    def zero_filled(self) -> Tensor:
        """Aᴴy: the back-projection (CT) or zero-filled SENSE-combined image (MRI)."""
        return self.operator.adjoint(self.y)


def _volume(volume, slice_axis: int) -> Tensor:
    v = torch.as_tensor(volume)
    if v.ndim != 3:
        raise InputDataError(f"problem: expected a 3-D volume, found shape {tuple(v.shape)}")
    if slice_axis not in (0, 1, 2):
        raise InputDataError(f"problem: slice_axis must be 0, 1 or 2, found {slice_axis}")
    v = v.to(torch.float32) if not v.is_floating_point() else v
    check_finite(v, "volume")
    return v


def _plane(shape, slice_axis: int) -> tuple[int, int]:
    return tuple(int(s) for i, s in enumerate(shape) if i != slice_axis)


def _ct_geometry(plane_shape, n_views, beam, limited_angle_degrees, arc_degrees=None, n_detectors=None):
    from ..datasets.ct_simulation import make_geometry

    return make_geometry(
        tuple(int(s) for s in plane_shape),
        beam,
        None if limited_angle_degrees else n_views,
        limited_angle_degrees=limited_angle_degrees,
        arc_degrees=arc_degrees,
        n_detectors=n_detectors,
    )


def ct_operator(
    plane_shape,
    n_views: int = 8,
    beam: str = "parallel",
    limited_angle_degrees: float | None = None,
    slice_axis: int = 0,
    n_slices: int | None = None,
    arc_degrees: float | None = None,
    n_detectors: int | None = None,
) -> SliceWise:
    """The CT volume operator for slices of ``plane_shape`` (no data needed).

    Args:
        plane_shape: ``(H, W)`` of one slice.
        n_views: projection count, uniform over ``arc_degrees`` (default 180° parallel, 360° fan).
        beam: ``"parallel"`` or ``"fan"`` (see :func:`~diffrecon.datasets.ct_simulation.make_geometry`).
        limited_angle_degrees: the limited-angle wedge at 1° steps (overrides ``n_views``).
        slice_axis: volume axis of the slices.
        n_slices: fix the domain's slice count (``None``: any).
        arc_degrees: angular range override (default: the make_geometry default).
        n_detectors: detector bin count override (default: the make_geometry default).

    Returns:
        ``SliceWise`` around the 2-D projector; the geometry is ``op.op2d.geometry``.
    """
    from ..datasets.ct_simulation import ct_volume_operator

    geom = _ct_geometry(plane_shape, n_views, beam, limited_angle_degrees, arc_degrees, n_detectors)
    return ct_volume_operator(geom, slice_axis, n_slices)


def mri_operator(
    plane_shape,
    acceleration: float = 4.0,
    mask: str = "uniform1d",
    center_fraction: float = 0.08,
    calib: int | None = None,
    n_coils: int = 8,
    seed: int = 0,
    slice_axis: int = 0,
    n_slices: int | None = None,
) -> SliceWise:
    """The multi-coil MRI volume operator of the MRI problems for slices of ``plane_shape`` (no data needed).

    Args:
        plane_shape: ``(H, W)`` of one slice (the k-space grid).
        acceleration: undersampling factor (sampled fraction ≈ 1/acceleration); one mask for all slices
            (:func:`~diffrecon.datasets.mri_simulation.make_mask`, seeded with ``seed``).
        mask: mask family, one of :data:`~diffrecon.datasets.mri_simulation.MASKS`.
        center_fraction: fully sampled central fraction of the phase-encode lines (1-D masks).
        calib: calibration box side of ``poisson2d`` (default max(2, min(24, min(H, W) // 4))).
        n_coils: birdcage coils, 2-D maps shared by all slices (Σ_c |S_c|² = 1).
        seed: mask seed.
        slice_axis: volume axis of the slices.
        n_slices: fix the domain's slice count (``None``: any).

    Returns:
        ``SliceWise(MultiCoilMRI(maps, mask, real_input=True))``; maps and mask are ``op.op2d.maps`` and
        ``op.op2d.mask``, the realised acceleration ``op.op2d.acceleration``.
    """
    from ..datasets.mri_simulation import make_mask
    from ..operators import MultiCoilMRI, birdcage_maps

    plane = tuple(int(s) for s in plane_shape)
    if calib is None:
        calib = max(2, min(24, min(plane) // 4))
    maps = birdcage_maps((int(n_coils), *plane))
    m = make_mask(mask, plane, acceleration, center_fraction, calib, seed)
    return SliceWise(MultiCoilMRI(maps, m.mask, real_input=True), axis=slice_axis, n_slices=n_slices)


# problem keyword arguments that only set the noise (everything else describes the acquisition);
# the MRI seed also seeds the mask, so it stays
_NOISE_ONLY = {"ct": ("noise", "seed"), "mri": ("snr_db",)}


def problem_operator(
    modality: str, plane_shape, slice_axis: int = 0, n_slices: int | None = None, **params
) -> SliceWise:
    """The operator :func:`ct_problem` / :func:`mri_problem` would build, without simulating anything.

    ``params`` are those functions' keyword arguments (``n_views``, ``beam``, … or ``acceleration``,
    ``mask``, …, ``seed``); the noise-only ones (CT ``noise``, ``seed``; MRI ``snr_db``) are ignored.
    """
    if modality not in _NOISE_ONLY:
        raise InputDataError(f"problem_operator: modality must be 'ct' or 'mri', found {modality!r}")
    kw = {k: v for k, v in params.items() if k not in _NOISE_ONLY[modality] and k != "name"}
    build = ct_operator if modality == "ct" else mri_operator
    return build(plane_shape, slice_axis=slice_axis, n_slices=n_slices, **kw)


def ct_problem(
    volume,
    n_views: int = 8,
    beam: str = "parallel",
    limited_angle_degrees: float | None = None,
    noise: float = 0.0,
    seed: int = 0,
    slice_axis: int = 0,
    name: str | None = None,
) -> Problem:
    """Sparse-view or limited-angle CT of every slice (see the module table): :func:`ct_operator`'s
    geometry measured by :func:`~diffrecon.datasets.ct_simulation.simulate_ct`."""
    from ..datasets.ct_simulation import simulate_ct

    v = _volume(volume, slice_axis)
    geom = _ct_geometry(_plane(v.shape, slice_axis), n_views, beam, limited_angle_degrees)
    sim = simulate_ct(v, geom, slice_axis=slice_axis, noise=noise, seed=seed)
    nv = geom.n_angles
    return Problem(
        name or f"ct-{'la' if limited_angle_degrees else 'sv'}{nv}",
        sim.sinogram.contiguous(),
        sim.operator,
        v,
        "ct",
        nv,
        sim.noise_sigma,
        {"geometry": geom.to_dict(), "beam": beam},
    )


def mri_problem(
    volume,
    acceleration: float = 4.0,
    mask: str = "uniform1d",
    center_fraction: float = 0.08,
    calib: int | None = None,
    n_coils: int = 8,
    snr_db: float | None = None,
    seed: int = 0,
    slice_axis: int = 0,
    name: str | None = None,
) -> Problem:
    """Multi-coil Cartesian MRI of every slice with one mask for all slices (see the module table):
    :func:`mri_operator` measured by :func:`~diffrecon.datasets.mri_simulation.simulate_mri`
    (noise from ``seed + 1``)."""
    from ..datasets.mri_simulation import simulate_mri

    v = _volume(volume, slice_axis)
    op = mri_operator(
        _plane(v.shape, slice_axis), acceleration, mask, center_fraction, calib, n_coils, seed, slice_axis
    ).to(v.device)
    sim = simulate_mri(v, op, snr_db, seed=int(seed) + 1)
    return Problem(
        name or f"mri-{mask}{acceleration:g}",
        sim.kspace,
        op,
        v,
        "mri",
        None,
        sim.noise_std,
        {
            "mask": mask,
            "acceleration": float(op.op2d.acceleration),
            "n_coils": int(n_coils),
            "snr_db": sim.snr_db,
        },
    )


PROBLEMS = {
    "ct-sv8": lambda v, **k: ct_problem(v, 8, name="ct-sv8", **k),
    "ct-sv4": lambda v, **k: ct_problem(v, 4, name="ct-sv4", **k),
    "ct-sv2": lambda v, **k: ct_problem(v, 2, name="ct-sv2", **k),
    "ct-sv8-fan": lambda v, **k: ct_problem(v, 8, beam="fan", name="ct-sv8-fan", **k),
    "ct-sv4-fan": lambda v, **k: ct_problem(v, 4, beam="fan", name="ct-sv4-fan", **k),
    "ct-sv2-fan": lambda v, **k: ct_problem(v, 2, beam="fan", name="ct-sv2-fan", **k),
    "ct-la90": lambda v, **k: ct_problem(v, limited_angle_degrees=90.0, name="ct-la90", **k),
    "mri-u4": lambda v, **k: mri_problem(v, 4.0, "uniform1d", 0.08, name="mri-u4", **k),
    "mri-u8": lambda v, **k: mri_problem(v, 8.0, "uniform1d", 0.04, name="mri-u8", **k),
    "mri-p4": lambda v, **k: mri_problem(v, 4.0, "poisson2d", name="mri-p4", **k),
}


def build_problem(name: str, volume, **kwargs) -> Problem:
    """Build a problem by registry name (``PROBLEMS``); keyword arguments go to the builder."""
    if name not in PROBLEMS:
        raise InputDataError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](volume, **kwargs)
