"""File I/O: NIfTI volumes (affine and header kept) and DICOM series, sinograms with geometry (and the
source's NIfTI header), atomic writes, and the memory limit every reader checks declared sizes against
(:func:`check_memory`)."""

from __future__ import annotations

import importlib

from .atomic import atomic_path, check_writable, write_text_atomic
from .dicom import load_dicom_series, save_dicom_series
from .nifti import NiftiVolume, header_bytes, header_from_bytes, load_nifti, output_header, save_nifti
from .sinogram import SinogramFile, check_memory, load_sinogram, memory_limit_bytes, save_sinogram
from .volume import load_volume

_LAZY = {
    "load_kspace": "kspace",
    "save_kspace": "kspace",
    "KSpaceData": "kspace",
    "load_cube": "hsi",
    "save_cube": "hsi",
    "make_cube": "hsi",
    "cube_to_tensor": "hsi",
    "tensor_to_cube": "hsi",
    "load_mask": "hsi",
}

__all__ = [
    "KSpaceData",
    "cube_to_tensor",
    "load_cube",
    "load_mask",
    "make_cube",
    "save_cube",
    "tensor_to_cube",
    "NiftiVolume",
    "SinogramFile",
    "atomic_path",
    "check_memory",
    "check_writable",
    "header_bytes",
    "header_from_bytes",
    "load_dicom_series",
    "load_kspace",
    "load_nifti",
    "load_sinogram",
    "load_volume",
    "memory_limit_bytes",
    "output_header",
    "save_dicom_series",
    "save_kspace",
    "save_nifti",
    "save_sinogram",
    "write_text_atomic",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
