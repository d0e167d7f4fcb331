"""One entry point for input volumes: a NIfTI file or a folder holding a DICOM series."""

from __future__ import annotations

import os

import torch

from ..errors import FileFormatError, InputDataError
from .nifti import NiftiVolume, load_nifti


def load_volume(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> NiftiVolume:
    """Read a 3-D volume from ``path``: a folder is read as one DICOM series
    (:func:`~diffrecon.io.dicom.load_dicom_series`: data ``(Columns, Rows, slices)``, RAS+ affine, a NIfTI
    header with qform/sform code 1), anything else as NIfTI (:func:`~diffrecon.io.nifti.load_nifti`, the
    file's own voxel order). Either way the result is a :class:`~diffrecon.io.nifti.NiftiVolume` whose
    ``header`` a reconstruction can be written with.

    Raises:
        InputDataError: ``path`` is a single DICOM file (a slice, not a volume; pass its folder), or the
            errors of the two readers.
        FileFormatError: the file is missing or not readable as NIfTI, or the folder holds no series.
    """
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file or folder (expected a NIfTI volume, or a folder holding "
                              "one DICOM series)")
    if os.path.isdir(path):
        from .dicom import load_dicom_series

        return load_dicom_series(path, dtype=dtype)
    name = os.fspath(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        from .dicom import is_dicom_file

        if is_dicom_file(path):
            raise InputDataError(f"{path}: a single DICOM file is one slice, not a volume; pass the folder "
                                 "that holds the whole series")
    return load_nifti(path, dtype=dtype)
