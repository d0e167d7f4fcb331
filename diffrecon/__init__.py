"""diffrecon: reconstruct images from indirect measurements with exact forward operators and diffusion priors.

Heavy optional backends (astra-toolbox, sigpy, diffusers) are imported lazily, only when a feature
that needs them is used.
"""

from .errors import (
    CheckpointError,
    DiffreconError,
    FileFormatError,
    GeometryError,
    InputDataError,
    MissingDependencyError,
    OutputExistsError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DiffreconError",
    "FileFormatError",
    "GeometryError",
    "InputDataError",
    "MissingDependencyError",
    "OutputExistsError",
    "__version__",
]
