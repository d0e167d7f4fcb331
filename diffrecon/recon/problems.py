"""The volume inverse problems of the DiffusionMBIR/DDS evaluation, all through ``SliceWise`` operators.

Each builder takes a ground-truth volume ``(D, H, W)`` in [0, 1] (slices along ``slice_axis``, axial = 0
for diffrecon's ``(z, y, x)`` volumes), simulates measurements and returns a :class:`Problem`:

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
orthonormal centred FFT of :mod:`diffrecon.operators.mri`; noise is complex Gaussian with
``snr_db`` (``None`` = noiseless). CT noise is white Gaussian with σ = ``noise`` × max |y|.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import InputDataError
from ..operators.base import LinearOperator
from ..operators.slicewise import SliceWise
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
    """Sparse-view or limited-angle CT of every slice (see the module table)."""
    from ..datasets.ct_simulation import make_geometry
    from ..operators.ct import operator_from_geometry

    v = _volume(volume, slice_axis)
    plane = tuple(s for i, s in enumerate(v.shape) if i != slice_axis)
    geom = make_geometry(
        plane, beam, None if limited_angle_degrees else n_views, limited_angle_degrees=limited_angle_degrees
    )
    op = SliceWise(operator_from_geometry(geom), axis=slice_axis).to(v.device)
    y = op(v).contiguous()
    sigma = float(noise) * float(y.abs().max())
    if sigma > 0:
        g = torch.Generator().manual_seed(int(seed))
        y = y + sigma * torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
    nv = geom.n_angles
    return Problem(
        name or f"ct-{'la' if limited_angle_degrees else 'sv'}{nv}",
        y,
        op,
        v,
        "ct",
        nv,
        sigma,
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
    """Multi-coil Cartesian MRI of every slice with one mask for all slices (see the module table)."""
    from ..datasets.mri_simulation import make_mask
    from ..operators.mri import MultiCoilMRI, birdcage_maps

    v = _volume(volume, slice_axis)
    plane = tuple(s for i, s in enumerate(v.shape) if i != slice_axis)
    if calib is None:
        calib = max(2, min(24, min(plane) // 4))
    maps = birdcage_maps((int(n_coils), *plane))
    m = make_mask(mask, plane, acceleration, center_fraction, calib, seed)
    op = SliceWise(MultiCoilMRI(maps, m.mask, real_input=True), axis=slice_axis).to(v.device)
    y = op(v)
    sigma = 0.0
    if snr_db is not None:
        power = float((y.abs() ** 2).sum() / (m.mask.sum() * n_coils * v.shape[slice_axis]))
        sigma = math.sqrt(power / 10 ** (float(snr_db) / 10))
        g = torch.Generator().manual_seed(int(seed) + 1)
        noise = torch.randn(y.shape, generator=g, dtype=torch.complex64).to(y.device) * sigma
        y = (y + noise) * m.mask.to(y.device)
    return Problem(
        name or f"mri-{mask}{acceleration:g}",
        y,
        op,
        v,
        "mri",
        None,
        sigma,
        {"mask": mask, "acceleration": float(m.acceleration), "n_coils": int(n_coils)},
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
