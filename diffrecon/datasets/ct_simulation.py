"""Simulated CT acquisitions of a volume: sparse-view, limited-angle, parallel or fan beam, with noise.

The acquisition and the measurement are separate steps:

* :func:`make_geometry` — the 2-D geometry of every slice from the slice shape and the acquisition
  settings; :func:`ct_volume_operator` — the ``SliceWise`` volume operator of a geometry (no data
  involved; :func:`diffrecon.recon.problems.ct_operator` does both from a plane shape);
* :func:`simulate_ct` — **the** CT simulation: apply that operator to a volume and add white Gaussian
  noise with σ = ``noise`` · max |A x| drawn from a CPU generator seeded with ``seed`` (the same
  seed gives the same sinogram on every device).

:func:`diffrecon.recon.problems.ct_problem`, ``diffrecon simulate``, ``diffrecon demo`` and the MONAI
transforms all simulate through :func:`simulate_ct`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputDataError
from ..operators import LinearOperator, SliceWise, operator_from_geometry
from ..operators.geometry import (
    FanGeometry,
    ParallelGeometry,
    default_n_detectors,
    limited_angles,
    sparse_angles,
)
from ..recon.validation import check_finite


def make_geometry(
    image_shape: tuple[int, int],
    kind: str = "parallel",
    n_views: int | None = 8,
    limited_angle_degrees: float | None = None,
    arc_degrees: float | None = None,
    n_detectors: int | None = None,
    source_distance: float | None = None,
    detector_distance: float | None = None,
    n_slices: int = 0,
) -> ParallelGeometry | FanGeometry:
    """A 2-D geometry for slices of ``image_shape`` with sensible defaults.

    * angles: ``n_views`` uniform over ``arc_degrees`` (default 180° for parallel beam, 360° for fan
      beam), or ``limited_angles(limited_angle_degrees)`` (1° steps) when that is given;
    * parallel: ``n_detectors`` defaults to the image diagonal;
    * fan: source at 2× the image diagonal, detector at 1× (magnification 1.5), and enough bins to
      cover the magnified image circle.

    Before any array is made, the memory of the projector's ray tables and (with ``n_slices``, the
    slices the acquisition will be simulated on) of the simulated sinograms is estimated and refused
    when over :func:`~diffrecon.io.sinogram.check_memory`'s limit (half the RAM, or
    ``DIFFRECON_MAX_VOLUME_GB``): ``--views 1000000000`` must fail with a message, not in the OOM killer.
    """
    if kind not in ("parallel", "fan"):
        raise InputDataError(f"geometry kind must be 'parallel' or 'fan', found {kind!r}")
    if n_detectors is not None and int(n_detectors) < 1:
        raise InputDataError(f"expected n_detectors >= 1 detector bins, found {n_detectors!r}")
    if arc_degrees is not None and not (math.isfinite(arc_degrees) and 0 < arc_degrees <= 360):
        raise InputDataError(f"expected an angular range arc_degrees in (0, 360], found {arc_degrees!r}")
    if limited_angle_degrees is None and (n_views is None or int(n_views) < 1):
        raise InputDataError(f"expected a positive number of views, found {n_views!r}")
    diag = math.hypot(*image_shape)
    s = 2.0 * diag if source_distance is None else float(source_distance)
    d = diag if detector_distance is None else float(detector_distance)
    if n_detectors is None:
        if kind == "parallel":
            n_detectors = default_n_detectors(image_shape)
        else:  # half fan angle subtending the image circle, projected onto the flat detector
            half = (s + d) * math.tan(math.asin(min(0.5 * diag / s, 0.999))) if s > 0 else 0.0
            n_detectors = int(math.ceil(2 * half)) + 2
    check_acquisition_memory(image_shape, n_views, limited_angle_degrees, int(n_detectors), n_slices)
    if limited_angle_degrees is not None:
        angles = limited_angles(limited_angle_degrees)
    else:
        arc = (180.0 if kind == "parallel" else 360.0) if arc_degrees is None else float(arc_degrees)
        angles = sparse_angles(int(n_views)) * (arc / 180.0)
    if kind == "parallel":
        return ParallelGeometry(image_shape, angles, int(n_detectors))
    return FanGeometry(image_shape, angles, s, d, int(n_detectors))


def check_acquisition_memory(
    image_shape, n_views: int | None, limited_angle_degrees: float | None, n_det: int, n_slices: int = 0
) -> None:
    """Refuse a CT acquisition whose projector set-up (:data:`~diffrecon.operators._joseph2d.RAY_TABLE_BYTES`
    per ray) and simulated sinograms (three float32 values per ray and slice: A x, the noise, their sum)
    would need more memory than :func:`~diffrecon.io.sinogram.check_memory` allows. Uses the counts alone,
    so it runs before any angle array is made."""
    from ..io.sinogram import check_memory
    from ..operators._joseph2d import RAY_TABLE_BYTES

    if limited_angle_degrees is not None:
        wedge = float(limited_angle_degrees)
        if not math.isfinite(wedge) or wedge <= 0:
            return  # limited_angles() reports it
        n_angles = math.ceil(wedge - 1e-9)  # 1-degree steps, as limited_angles
    else:
        n_angles = int(n_views)
    rays = n_angles * n_det
    # a simulation holds A x, the noise draw and their sum: three float32 sinograms per slice
    need = rays * (RAY_TABLE_BYTES + 3 * 4 * max(int(n_slices), 0))
    slices = f"{n_slices} slices x " if n_slices else ""
    check_memory(need, f"CT acquisition of {image_shape[0]}x{image_shape[1]} slices",
                 f"the projector and sinograms of {slices}{n_angles:,} views x {n_det:,} detector bins")


@dataclass
class CTSimulation:
    """A simulated CT acquisition.

    Attributes:
        sinogram: ``(n_slices, n_angles, n_detectors)`` noisy measurements.
        geometry: the 2-D geometry of every slice.
        noise_sigma: absolute standard deviation of the added Gaussian noise (0 = noiseless).
        operator: the ``SliceWise`` volume operator that produced the noiseless sinogram
            (:func:`ct_volume_operator` of ``geometry`` along the simulation's slice axis).
    """

    sinogram: torch.Tensor
    geometry: ParallelGeometry | FanGeometry
    noise_sigma: float
    operator: LinearOperator | None = None


def ct_volume_operator(
    geometry: ParallelGeometry | FanGeometry, slice_axis: int = 0, n_slices: int | None = None
) -> SliceWise:
    """The volume operator of a 2-D CT geometry: its projector applied to every slice along ``slice_axis``.

    Args:
        geometry: 2-D parallel- or fan-beam geometry of one slice.
        slice_axis: volume axis the slices are taken along (0, 1, 2).
        n_slices: fix the slice count of the domain (``None``: any number of slices).

    Returns:
        ``SliceWise(operator_from_geometry(geometry), axis=slice_axis, n_slices=n_slices)``; the 2-D
        projector is ``.op2d`` and its geometry ``.op2d.geometry``.
    """
    return SliceWise(operator_from_geometry(geometry), axis=slice_axis, n_slices=n_slices)


def add_relative_noise(y: torch.Tensor, noise: float, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``y + σ·n`` with σ = ``noise`` · max |y| and n ~ N(0, I) drawn on the CPU from ``seed``.

    Returns the noisy measurements and σ (``y`` itself, unchanged, when σ = 0).
    """
    if noise < 0 or not math.isfinite(noise):
        raise InputDataError(f"simulate_ct: expected noise >= 0, found {noise}")
    sigma = float(noise) * float(y.abs().max())
    if sigma > 0:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        y = y + sigma * torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
    return y, sigma


def simulate_ct(
    volume: torch.Tensor,
    geometry: ParallelGeometry | FanGeometry,
    slice_axis: int = 0,
    noise: float = 0.0,
    seed: int = 0,
) -> CTSimulation:
    """Project every slice of ``volume`` and add white Gaussian noise (the one CT simulation).

    y = A x + σ·n with A = :func:`ct_volume_operator` ``(geometry, slice_axis)``, σ = ``noise`` · max |A x|
    and n ~ N(0, I) from a CPU generator seeded with ``seed``.

    Args:
        volume: 3-D tensor; slices are taken along ``slice_axis`` and must match ``geometry.image_shape``.
        geometry: 2-D geometry applied to each slice.
        slice_axis: volume axis the slices are taken along.
        noise: noise standard deviation relative to the largest sinogram value (0 = noiseless).
        seed: seed of the noise generator (same seed → same sinogram).

    Returns:
        The sinogram ``(n_slices, n_angles, n_detectors)``, the geometry, the absolute σ used and the
        operator.
    """
    if volume.ndim != 3:
        raise InputDataError(f"simulate_ct: expected a 3-D volume, found shape {tuple(volume.shape)}")
    check_finite(volume, "volume")
    if slice_axis not in (0, 1, 2, -1, -2, -3):
        raise InputDataError(f"simulate_ct: slice_axis must be 0, 1 or 2, found {slice_axis}")
    slice_shape = tuple(s for i, s in enumerate(volume.shape) if i != slice_axis % 3)
    if slice_shape != tuple(geometry.image_shape):
        raise InputDataError(
            f"simulate_ct: slices along axis {slice_axis} have shape {slice_shape}, but the geometry expects "
            f"{tuple(geometry.image_shape)}"
        )
    op = ct_volume_operator(geometry, slice_axis).to(volume.device)
    sino, sigma = add_relative_noise(op(volume), noise, seed)
    return CTSimulation(sino, geometry, sigma, op)


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the scanner's superior–inferior direction (axial slices)."""
    import nibabel as nib

    codes = nib.orientations.aff2axcodes(np.asarray(affine))
    for i, c in enumerate(codes):
        if c in ("S", "I"):
            return i
    return 2
