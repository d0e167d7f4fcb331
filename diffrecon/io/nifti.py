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
    """Write a 3-D volume as NIfTI-1 atomically, with ``affine`` and (a copy of) ``header``.

    The stored data type is float32 whatever the source header said (a reconstruction is not an
    integer image), without scaling (``scl_slope`` NaN). ``volume`` may be a tensor on any device or a
    MONAI ``MetaTensor`` (its affine is used when ``affine`` is None).

    How the affine and the header combine (``header`` a nibabel NIfTI-1 or NIfTI-2 header; a NIfTI-2
    header is converted to NIfTI-1 field by field):

    * no header: the affine is written as the sform with code 2 (aligned), qform code 0 (nibabel's
      default for a new image); no affine either: the identity;
    * a header and no affine: the header's qform and sform, matrices and codes, are written as they are;
    * a header whose sform (when ``sform_code > 0``, else its qform when ``qform_code > 0``) equals
      ``affine`` to 1e-4 mm: the header wins, so both matrices, both codes, ``pixdim`` and the rest are
      written exactly as the header has them;
    * a header that disagrees with ``affine`` (say, a sub-volume's shifted affine): the affine wins and
      is written as both sform and qform, each keeping the header's code (sform code 2 where the header
      had 0, qform code 0 stays 0); ``pixdim`` follows the affine.
    """
    import nibabel as nib

    if affine is None and hasattr(volume, "affine"):
        affine = np.asarray(volume.affine.cpu() if hasattr(volume.affine, "cpu") else volume.affine)
    arr = (volume.detach().cpu().float().numpy() if isinstance(volume, torch.Tensor)
           else np.asarray(volume, np.float32))
    if arr.ndim != 3:
        raise InputDataError(f"save_nifti: expected a 3-D volume, found shape {arr.shape}")
    require_nifti_name(path)
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise InputDataError(f"save_nifti: expected a 4x4 affine, found shape {affine.shape}")
    if header is None:
        img = nib.Nifti1Image(arr.astype(np.float32), np.eye(4) if affine is None else affine)
    else:
        hdr = _as_nifti1(header, "save_nifti")
        if affine is not None and not _header_matches(hdr, affine):
            sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
            hdr.set_sform(affine, code=sform_code or 2)
            hdr.set_qform(affine, code=qform_code)
        # affine=None: nibabel takes the header's qform/sform as they are and does not rewrite them
        img = nib.Nifti1Image(arr.astype(np.float32), None, header=hdr)
    img.set_data_dtype(np.float32)
    img.header["scl_slope"], img.header["scl_inter"] = np.nan, np.nan  # data are stored unscaled
    with atomic_path(path, overwrite) as tmp:
        nib.save(img, os.fspath(tmp))


def _header_matches(hdr, affine: np.ndarray, atol: float = 1e-4) -> bool:
    """Whether the header's best coded affine (sform, else qform) equals ``affine`` to ``atol`` mm."""
    if int(hdr["sform_code"]) > 0:
        ref = hdr.get_sform()
    elif int(hdr["qform_code"]) > 0:
        ref = hdr.get_qform()
    else:
        return False
    return bool(np.allclose(ref, affine, rtol=0.0, atol=atol))


def _as_nifti1(header, where: str):
    """A NIfTI-1 single-file (``n+1``) copy of a nibabel NIfTI-1 or NIfTI-2 header.

    A NIfTI-2 header is converted field by field (every NIfTI-1 field exists in NIfTI-2, with wider types),
    so qform/sform matrices and codes, ``pixdim`` (time included), units and ``dim_info`` carry over;
    a dimension above NIfTI-1's 32767 is refused.
    """
    import nibabel as nib

    if not isinstance(header, nib.Nifti1Header):  # Nifti2Header is a subclass of Nifti1Header
        raise InputDataError(
            f"{where}: expected a nibabel NIfTI-1 or NIfTI-2 header, found {type(header).__name__}; "
            "convert it with nibabel.Nifti1Header.from_header(header)"
        )
    if not isinstance(header, nib.Nifti2Header):
        out = nib.Nifti1Header(header.binaryblock, endianness=header.endianness)
        out["magic"] = out.single_magic  # a .hdr/.img pair's header, written as one .nii file
        return out
    if int(np.max(header["dim"][1:])) > np.iinfo(np.int16).max:
        raise InputDataError(f"{where}: NIfTI-2 dimensions {header['dim'][1:].tolist()} do not fit NIfTI-1 "
                             "(at most 32767 per axis); crop the volume")
    out = nib.Nifti1Header()
    for key in out.keys():
        if key in ("sizeof_hdr", "magic", "vox_offset") or key not in header:
            continue
        out[key] = header[key]
    return out


NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540


def header_bytes(header) -> np.ndarray:
    """The raw bytes of a NIfTI header as a 1-D uint8 array, to store beside derived data (e.g. in a
    sinogram ``.npz``) and rebuild with :func:`header_from_bytes`.

    A NIfTI-1 header gives its 348 bytes, a NIfTI-2 header its 540 bytes, both in the header's own byte
    order (extensions are not part of the header and are not kept).

    Raises:
        InputDataError: ``header`` is not a nibabel NIfTI-1 or NIfTI-2 header (e.g. Analyze or MGH;
            convert it with ``nibabel.Nifti1Header.from_header``).
    """
    import nibabel as nib

    if not isinstance(header, nib.Nifti1Header):
        raise InputDataError(
            f"header_bytes: expected a nibabel NIfTI-1 or NIfTI-2 header, found {type(header).__name__}; "
            "convert it with nibabel.Nifti1Header.from_header(header)"
        )
    return np.frombuffer(header.binaryblock, dtype=np.uint8).copy()


def header_from_bytes(arr, where: str = "header_from_bytes"):
    """Rebuild a nibabel header from the bytes :func:`header_bytes` gave.

    ``arr``: a 1-D uint8 array (or ``bytes``) of 348 bytes (NIfTI-1, magic ``n+1`` or ``ni1``; returns a
    ``nibabel.Nifti1Header``) or 540 bytes (NIfTI-2, magic ``n+2`` or ``ni2``; returns a
    ``nibabel.Nifti2Header``), in either byte order. ``where`` prefixes error messages (a file name).

    Raises:
        FileFormatError: not uint8, the wrong length, a ``sizeof_hdr`` field that disagrees with the
            length, a wrong magic string, or fields nibabel cannot read.
    """
    import io

    import nibabel as nib

    if isinstance(arr, (bytes, bytearray)):
        arr = np.frombuffer(bytes(arr), dtype=np.uint8)
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise FileFormatError(f"{where}: a stored NIfTI header must be a 1-D uint8 array, found "
                              f"{arr.dtype} of shape {arr.shape}; store header_bytes(header)")
    raw = arr.tobytes()
    kinds = {NIFTI1_HEADER_BYTES: (nib.Nifti1Header, 344, (b"n+1\0", b"ni1\0")),
             NIFTI2_HEADER_BYTES: (nib.Nifti2Header, 4, (b"n+2\0", b"ni2\0"))}
    if len(raw) not in kinds:
        raise FileFormatError(f"{where}: a NIfTI header has 348 (NIfTI-1) or 540 (NIfTI-2) bytes, found "
                              f"{len(raw)}; store header_bytes(header)")
    klass, at, magics = kinds[len(raw)]
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if len(raw) not in sizes:
        raise FileFormatError(f"{where}: the header's sizeof_hdr field does not say {len(raw)}; "
                              "these bytes are not a NIfTI header (store header_bytes(header))")
    if raw[at:at + 4] not in magics:
        raise FileFormatError(f"{where}: expected the NIfTI magic {magics[0][:3].decode()!r} or "
                              f"{magics[1][:3].decode()!r}, found {raw[at:at + 4]!r}")
    try:
        return klass.from_fileobj(io.BytesIO(raw), check=True)
    except Exception as exc:  # nibabel's HeaderDataError and friends
        raise FileFormatError(f"{where}: stored NIfTI header is not readable ({type(exc).__name__}: {exc})"
                              ) from exc


def output_header(source_header, descrip: str):
    """The header of a volume derived from a source NIfTI (a reconstruction): a NIfTI-1 copy of
    ``source_header`` (a NIfTI-2 header is converted to NIfTI-1 field by field) with

    * ``descrip`` set to ``descrip`` (ASCII, cut to the field's 80 bytes),
    * data type float32 and no scaling (``scl_slope``/``scl_inter`` NaN),
    * the intent cleared (a reconstruction is an image, not the source's label map or statistic);

    everything else — qform and sform matrices and codes, ``xyzt_units``, ``pixdim``, ``dim_info``,
    ``slice_*`` timing fields, ``cal_min``/``cal_max``, ``aux_file`` — as in the source. Pass the result
    to :func:`save_nifti` with the source's affine.
    """
    hdr = _as_nifti1(source_header, "output_header")
    hdr.set_data_dtype(np.float32)
    hdr["scl_slope"], hdr["scl_inter"] = np.nan, np.nan
    hdr.set_intent("none", (), name="")
    hdr["descrip"] = str(descrip).encode("ascii", "replace")[:80]
    return hdr
