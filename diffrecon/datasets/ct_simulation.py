"""Simulated CT acquisitions of a volume: sparse-view, limited-angle, parallel or fan beam, with noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputDataError
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
) -> ParallelGeometry | FanGeometry:
    """A 2-D geometry for slices of ``image_shape`` with sensible defaults.

    * angles: ``n_views`` uniform over ``arc_degrees`` (default 180° for parallel beam, 360° for fan
      beam), or ``limited_angles(limited_angle_degrees)`` (1° steps) when that is given;
    * parallel: ``n_detectors`` defaults to the image diagonal;
    * fan: source at 2× the image diagonal, detector at 1× (magnification 1.5), and enough bins to
      cover the magnified image circle.
    """
    if kind not in ("parallel", "fan"):
        raise InputDataError(f"geometry kind must be 'parallel' or 'fan', found {kind!r}")
    if limited_angle_degrees is not None:
        angles = limited_angles(limited_angle_degrees)
    else:
        if n_views is None or int(n_views) < 1:
            raise InputDataError(f"expected a positive number of views, found {n_views!r}")
        arc = (180.0 if kind == "parallel" else 360.0) if arc_degrees is None else float(arc_degrees)
        angles = sparse_angles(int(n_views)) * (arc / 180.0)
    diag = math.hypot(*image_shape)
    if kind == "parallel":
        return ParallelGeometry(image_shape, angles, n_detectors or default_n_detectors(image_shape))
    s = 2.0 * diag if source_distance is None else float(source_distance)
    d = diag if detector_distance is None else float(detector_distance)
    if n_detectors is None:
        # half fan angle subtending the image circle, projected onto the flat detector
        r = 0.5 * diag
        half = (s + d) * math.tan(math.asin(min(r / s, 0.999)))
        n_detectors = int(math.ceil(2 * half)) + 2
    return FanGeometry(image_shape, angles, s, d, n_detectors)


@dataclass
class CTSimulation:
    sinogram: torch.Tensor  # (n_slices, n_angles, n_detectors)
    geometry: ParallelGeometry | FanGeometry
    noise_sigma: float  # absolute standard deviation of the added Gaussian noise


def simulate_ct(
    volume: torch.Tensor,
    geometry: ParallelGeometry | FanGeometry,
    slice_axis: int = 0,
    noise: float = 0.0,
    seed: int = 0,
) -> CTSimulation:
    """Project every slice of ``volume`` and add white Gaussian noise.

    Args:
        volume: 3-D tensor; slices are taken along ``slice_axis`` and must match ``geometry.image_shape``.
        geometry: 2-D geometry applied to each slice.
        slice_axis: volume axis the slices are taken along.
        noise: noise standard deviation relative to the largest sinogram value (0 = noiseless).
        seed: seed of the noise generator (same seed → same sinogram).

    Returns:
        The sinogram ``(n_slices, n_angles, n_detectors)``, the geometry and the absolute σ used.
    """
    from ..operators.ct import operator_from_geometry
    from ..operators.slicewise import SliceWise

    if volume.ndim != 3:
        raise InputDataError(f"simulate_ct: expected a 3-D volume, found shape {tuple(volume.shape)}")
    check_finite(volume, "volume")
    if noise < 0 or not math.isfinite(noise):
        raise InputDataError(f"simulate_ct: expected noise >= 0, found {noise}")
    slice_shape = tuple(s for i, s in enumerate(volume.shape) if i != slice_axis % 3)
    if slice_shape != tuple(geometry.image_shape):
        raise InputDataError(
            f"simulate_ct: slices along axis {slice_axis} have shape {slice_shape}, but the geometry expects "
            f"{tuple(geometry.image_shape)}"
        )
    op = SliceWise(operator_from_geometry(geometry), axis=slice_axis).to(volume.device)
    sino = op(volume)
    sigma = float(noise) * float(sino.abs().max())
    if sigma > 0:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        sino = sino + sigma * torch.randn(sino.shape, generator=g, dtype=sino.dtype).to(sino.device)
    return CTSimulation(sino, geometry, sigma)


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the scanner's superior–inferior direction (axial slices)."""
    import nibabel as nib

    codes = nib.orientations.aff2axcodes(np.asarray(affine))
    for i, c in enumerate(codes):
        if c in ("S", "I"):
            return i
    return 2
