"""NIfTI volumes in and out, keeping the affine and header so results align with their source."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FileFormatError, InputDataError
from .atomic import atomic_path


@dataclass
class NiftiVolume:
    """A volume as read from disk: data in the file's voxel order, its 4×4 affine and header."""

    data: torch.Tensor
    affine: np.ndarray
    header: object  # nibabel.Nifti1Header

    def __iter__(self):  # allows ``vol, affine, header = load_nifti(path)``
        return iter((self.data, self.affine, self.header))


def load_nifti(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> NiftiVolume:
    """Read a 3-D NIfTI file (``.nii`` or ``.nii.gz``).

    Returns the voxel array as a tensor of ``dtype`` in the file's own axis order (no reorientation;
    the affine maps voxel indices to scanner millimetres), the affine and the header.

    Refused from the header alone, before the voxels are read: complex images (diffrecon's volumes are
    real; casting would silently drop the imaginary part, so pass the magnitude or the real part) and
    images whose declared shape would need more memory than the limit of
    :func:`~diffrecon.io.sinogram.check_memory` (a few-KB compressed file can claim terabytes).

    Raises:
        FileFormatError: the file is missing or not a readable NIfTI image.
        InputDataError: the image is complex, too large for memory, not 3-D (a trailing singleton 4th
            axis is dropped) or holds NaN/Inf.
    """
    out_dtype = np.float64 if dtype == torch.float64 else np.float32
    img = check_nifti_header(path, np.dtype(out_dtype).itemsize)
    try:
        arr = np.asarray(img.dataobj, dtype=out_dtype)
    except Exception as exc:  # nibabel raises several unrelated types for bad files
        raise FileFormatError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputDataError(f"{path}: expected a 3-D volume, found an array of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputDataError(
            f"{path}: expected finite voxel values, found {int((~np.isfinite(arr)).sum())} NaN/Inf"
        )
    return NiftiVolume(torch.from_numpy(np.ascontiguousarray(arr)).to(dtype),
                       np.asarray(img.affine, dtype=np.float64), img.header)


def check_nifti_header(path: str | os.PathLike, out_itemsize: int = 4):
    """Open a NIfTI file lazily and check its header before any voxel is read; returns the nibabel image.

    Refused: a missing or unreadable file (:class:`~diffrecon.errors.FileFormatError`); a complex image
    (diffrecon's volumes are real and a cast would drop the imaginary part: pass the magnitude or the
    real part); an image whose declared shape would need more memory than
    :func:`~diffrecon.io.sinogram.check_memory` allows, counting the stored array and its conversion to
    ``out_itemsize``-byte floats (a few-KB file can declare terabytes).
    """
    import nibabel as nib

    from .sinogram import check_memory

    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file (expected a NIfTI volume)")
    try:
        img = nib.load(os.fspath(path))
        shape, stored = tuple(int(n) for n in img.shape), np.dtype(img.get_data_dtype())
    except Exception as exc:  # nibabel raises several unrelated types for bad files
        raise FileFormatError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    if np.issubdtype(stored, np.complexfloating):
        raise InputDataError(
            f"{path}: the volume is complex ({stored}); diffrecon takes a real volume, so pass its "
            "magnitude (np.abs) or its real part (np.real) as a float NIfTI"
        )
    check_memory(math.prod(shape) * (stored.itemsize + out_itemsize), str(path),
                 f"reading the {'x'.join(map(str, shape))} {stored} image")
    return img


def require_nifti_name(path: str | os.PathLike) -> None:
    """Raise :class:`~diffrecon.errors.InputDataError` unless ``path`` ends in ``.nii`` or ``.nii.gz``
    (commands call it before any work, so a wrong output name costs nothing)."""
    name = os.fspath(path).lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise InputDataError(f"{path}: volumes are written as NIfTI; name the output .nii or .nii.gz")


def save_nifti(
    path: str | os.PathLike,
    volume: torch.Tensor | np.ndarray,
    affine: np.ndarray | None = None,
    header=None,
    overwrite: bool = False,
) -> None:
    """Write a 3-D volume as NIfTI atomically, with ``affine`` and (a copy of) ``header``.

    The stored data type is float32 whatever the source header said (a reconstruction is not an
    integer image). ``volume`` may be a tensor on any device or a MONAI ``MetaTensor`` (its affine is
    used when ``affine`` is None).
    """
    import nibabel as nib

    if affine is None and hasattr(volume, "affine"):
        affine = np.asarray(volume.affine.cpu() if hasattr(volume.affine, "cpu") else volume.affine)
    arr = (volume.detach().cpu().float().numpy() if isinstance(volume, torch.Tensor)
           else np.asarray(volume, np.float32))
    if arr.ndim != 3:
        raise InputDataError(f"save_nifti: expected a 3-D volume, found shape {arr.shape}")
    require_nifti_name(path)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputDataError(f"save_nifti: expected a 4x4 affine, found shape {affine.shape}")
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr.astype(np.float32), affine, header=hdr)
    img.set_data_dtype(np.float32)
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan  # data are stored unscaled
    with atomic_path(path, overwrite) as tmp:
        nib.save(img, os.fspath(tmp))
