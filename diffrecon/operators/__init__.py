"""Forward models with exact adjoints (see :mod:`diffrecon.operators.base`)."""

from .base import Adjoint, Composition, Identity, LinearOperator, Scaled, Sum, VStack
from .coils import birdcage_maps, espirit_maps
from .cone import ConeBeam3D
from .ct import FanBeam2D, ParallelBeam2D, operator_from_geometry
from .elementary import FiniteDifference, Mask, MoveAxis
from .framing import Framing, FramingOperator
from .geometry import (
    ConeGeometry,
    FanGeometry,
    ParallelGeometry,
    geometry_from_dict,
    limited_angles,
    sparse_angles,
)
from .mri import (
    MultiCoilMRI,
    MultiCoilMRI3D,
    NonCartesianMRI,
    SingleCoilMRI,
    radial_trajectory,
)
from .noise import add_gaussian_noise, add_mixed_noise, estimate_sigma
from .sampling import (
    SamplingMask,
    equispaced1d_mask,
    gaussian1d_mask,
    poisson2d_mask,
    radial_mask,
    uniform1d_mask,
)
from .slicewise import SliceWise

__all__ = [
    "Adjoint",
    "Composition",
    "ConeGeometry",
    "FanGeometry",
    "FiniteDifference",
    "Framing",
    "FramingOperator",
    "Identity",
    "LinearOperator",
    "Mask",
    "MoveAxis",
    "ParallelGeometry",
    "Scaled",
    "SliceWise",
    "Sum",
    "VStack",
    "ConeBeam3D",
    "FanBeam2D",
    "ParallelBeam2D",
    "operator_from_geometry",
    "geometry_from_dict",
    "limited_angles",
    "sparse_angles",
    "MultiCoilMRI",
    "MultiCoilMRI3D",
    "NonCartesianMRI",
    "SamplingMask",
    "SingleCoilMRI",
    "birdcage_maps",
    "espirit_maps",
    "equispaced1d_mask",
    "gaussian1d_mask",
    "poisson2d_mask",
    "radial_mask",
    "radial_trajectory",
    "uniform1d_mask",
    "add_gaussian_noise",
    "add_mixed_noise",
    "estimate_sigma",
]
