"""DICOM series (one folder of single-frame slices) in and out, as NIfTI-convention volumes.

Voxel order and affine. :func:`load_dicom_series` returns ``data[i, j, k]`` = the value at column ``i``
and row ``j`` of slice ``k`` (shape ``(Columns, Rows, n_slices)``, the order nibabel, MONAI and ITK use
for DICOM), slices sorted by increasing position along the slice normal ``n = r × c`` (``r``, ``c``: the
row and column direction cosines of ImageOrientationPatient). DICOM positions are in the patient's LPS
frame (x to the Left, y to the Posterior, z to the Superior, millimetres); NIfTI affines are RAS+, so
the affine is ``diag(-1, -1, 1, 1) @ A_lps`` with

```text
A_lps = [ r·Δcol   c·Δrow   (P_last − P_first)/(n − 1)   P_first ]
        [   0        0                 0                    1    ]
```

where ``Δrow, Δcol = PixelSpacing`` (the distance between rows, then between columns) and ``P`` are the
sorted ImagePositionPatient vectors (the centre of the first transmitted pixel of each slice). Values
are ``RescaleSlope · stored + RescaleIntercept`` (Hounsfield units for CT), float32.

:func:`save_dicom_series` writes the inverse: a CT Image Storage series, int16 with a rescale slope and
intercept, explicit VR little endian. Both need pydicom (``pip install 'diffrecon[data]'``).
"""

from __future__ import annotations

import datetime
import math
import os
import pathlib

import numpy as np
import torch

from ..errors import FileFormatError, InputDataError, require
from .nifti import NiftiVolume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: also RAS → LPS
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # a DICOMDIR index, not an image


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts like a DICOM Part-10 file (128-byte preamble + ``DICM``)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def load_dicom_series(
    directory: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    series_uid: str | None = None,
    spacing_tolerance: float = 0.01,
) -> NiftiVolume:
    """Read one DICOM series from a folder into the same :class:`~diffrecon.io.nifti.NiftiVolume` that
    :func:`~diffrecon.io.nifti.load_nifti` returns.

    Args:
        directory: the folder holding the series' files (not searched recursively; files without the
            DICOM preamble, hidden files and DICOMDIR indexes are skipped).
        dtype: tensor dtype of ``data`` (float32 or float64).
        series_uid: the SeriesInstanceUID to read when the folder holds several series.
        spacing_tolerance: allowed deviation of each slice step from the mean step, relative to it
            (0.01: 1 %); also bounds how far a slice may sit off the line through the first and last.

    Returns:
        ``data`` of shape ``(Columns, Rows, n_slices)`` in rescaled units (see the module notes for the
        order), the RAS+ millimetre ``affine`` (4×4 float64) and a ``nibabel.Nifti1Header`` for it: qform
        and sform both the affine with code 1 (scanner), units mm, ``pixdim`` the spacing, slice axis 2
        in ``dim_info``, float32 unscaled, ``descrip`` naming the series.

    Raises:
        FileFormatError: the folder is missing, holds no DICOM image, or a file cannot be decoded.
        InputDataError: a single file (or slice) instead of a series; several series without
            ``series_uid``; missing ImagePositionPatient/ImageOrientationPatient/PixelSpacing; slices
            that differ in orientation, size or pixel spacing; two slices at one position; uneven
            spacing beyond ``spacing_tolerance``; multi-frame, colour or non-finite images.
        MissingDependencyError: pydicom is not installed.
    """
    pydicom = require("pydicom", "data")
    folder = pathlib.Path(directory)
    if not folder.exists():
        raise FileFormatError(f"{folder}: no such folder (expected a folder holding one DICOM series)")
    if not folder.is_dir():
        raise InputDataError(f"{folder}: a single file is not a series; pass the folder that holds all the "
                             "slices of the series")
    headers = _read_headers(pydicom, folder)
    headers = _one_series(headers, folder, series_uid)
    if len(headers) < 2:
        raise InputDataError(f"{folder}: the series has a single slice; a volume needs at least 2 slices "
                             "(put all the slices of the series in this folder)")
    geom = _series_geometry(headers, folder, spacing_tolerance)
    order, rows, cols = geom["order"], geom["rows"], geom["cols"]
    from .sinogram import check_memory

    out_dtype = np.float64 if dtype == torch.float64 else np.float32
    check_memory(rows * cols * len(order) * (np.dtype(out_dtype).itemsize + 8), str(folder),
                 f"reading the {cols}x{rows}x{len(order)} DICOM series")
    arr = np.empty((cols, rows, len(order)), dtype=out_dtype)
    for k, idx in enumerate(order):
        path, _ = headers[idx]
        arr[:, :, k] = _read_pixels(pydicom, path, rows, cols).T
    if not np.isfinite(arr).all():
        raise InputDataError(f"{folder}: expected finite voxel values, found "
                             f"{int((~np.isfinite(arr)).sum())} NaN/Inf")
    affine = geom["affine"]
    first = headers[order[0]][1]
    descrip = " ".join(str(v) for v in ("DICOM", first.get("Modality", ""), "series",
                                        first.get("SeriesNumber", ""), first.get("SeriesDescription", ""))
                       if str(v))
    return NiftiVolume(torch.from_numpy(arr).to(dtype), affine, dicom_header(affine, arr.shape, descrip))


def dicom_header(affine: np.ndarray, shape: tuple[int, int, int], descrip: str = "DICOM series"):
    """The NIfTI-1 header :func:`load_dicom_series` gives a series: ``shape``, float32 unscaled, qform and
    sform = ``affine`` with code 1 (scanner; DICOM positions are scanner coordinates), units mm (no time
    unit), ``pixdim`` the voxel spacing, ``dim_info`` slice axis 2, ``descrip`` (cut to 80 bytes)."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(n) for n in shape))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "unknown")
    hdr.set_dim_info(slice=2)
    hdr["scl_slope"], hdr["scl_inter"] = np.nan, np.nan
    hdr["descrip"] = descrip.encode("ascii", "replace")[:80]
    return hdr


def _read_headers(pydicom, folder: pathlib.Path) -> list:
    """(path, dataset without pixels) of every DICOM image file directly in ``folder``, by name."""
    from pydicom.errors import InvalidDicomError

    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError):
            continue  # not a DICOM file (a README, a thumbnail)
        except Exception as exc:  # pydicom raises several unrelated types for damaged files
            raise FileFormatError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
        sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if sop_class == _MEDIA_DIRECTORY_STORAGE or "Rows" not in ds:
            continue  # a DICOMDIR index or a non-image object (a report, a presentation state)
        out.append((path, ds))
    if not out:
        raise FileFormatError(f"{folder}: no DICOM image files found (files need the DICM preamble; "
                              "sub-folders are not searched)")
    return out


def _one_series(headers: list, folder: pathlib.Path, series_uid: str | None) -> list:
    groups: dict[str, list] = {}
    for item in headers:
        groups.setdefault(str(item[1].get("SeriesInstanceUID", "")), []).append(item)
    if series_uid is not None:
        if series_uid not in groups:
            raise InputDataError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found "
                                 f"{', '.join(sorted(groups))}")
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(f"{uid or '(none)'}: {len(v)} files" for uid, v in sorted(groups.items()))
        raise InputDataError(f"{folder}: holds {len(groups)} DICOM series ({listing}); put one series per "
                             "folder or pass series_uid=")
    return headers


def _vector(ds, keyword: str, n: int, path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        raise InputDataError(f"{path}: missing or malformed {keyword} (expected {n} numbers, found "
                             f"{value!r}); diffrecon needs it to place the slice in space")
    vec = np.array([float(v) for v in value], dtype=np.float64)
    if not np.isfinite(vec).all():
        raise InputDataError(f"{path}: {keyword} holds non-finite values {value!r}")
    return vec


def _series_geometry(headers: list, folder: pathlib.Path, tol: float) -> dict:
    """Check that the slices form one regular stack; return the slice order, size and RAS affine."""
    path0, ds0 = headers[0]
    for path, ds in headers:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise InputDataError(f"{path}: a multi-frame image ({frames} frames); only series of "
                                 "single-frame slices are read (convert it, e.g. with dcm2niix, to NIfTI)")
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputDataError(f"{path}: a colour image (SamplesPerPixel {ds.SamplesPerPixel}); expected "
                                 "greyscale slices")
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    iop0 = _vector(ds0, "ImageOrientationPatient", 6, path0)
    spacing0 = _vector(ds0, "PixelSpacing", 2, path0)
    positions = []
    for path, ds in headers:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise InputDataError(f"{folder}: slices differ in size ({path0.name}: {rows}x{cols}, "
                                 f"{path.name}: {ds.Rows}x{ds.Columns} rows x columns); not one series")
        iop = _vector(ds, "ImageOrientationPatient", 6, path)
        if np.abs(iop - iop0).max() > 1e-4:
            raise InputDataError(f"{folder}: slices differ in orientation ({path0.name}: {iop0.tolist()}, "
                                 f"{path.name}: {iop.tolist()}); not one stack (localisers mixed in?)")
        spacing = _vector(ds, "PixelSpacing", 2, path)
        if np.abs(spacing - spacing0).max() > 1e-4 * spacing0.max():
            raise InputDataError(f"{folder}: slices differ in PixelSpacing ({path0.name}: "
                                 f"{spacing0.tolist()}, {path.name}: {spacing.tolist()})")
        positions.append(_vector(ds, "ImagePositionPatient", 3, path))
    if rows < 1 or cols < 1 or not (spacing0 > 0).all():
        raise InputDataError(f"{path0}: expected a positive image size and PixelSpacing, found "
                             f"{rows}x{cols} and {spacing0.tolist()}")
    r, c = iop0[:3], iop0[3:]
    if min(np.linalg.norm(r), np.linalg.norm(c)) < 0.5:
        raise InputDataError(f"{path0}: ImageOrientationPatient {iop0.tolist()} is not two unit vectors")
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    if abs(float(r @ c)) > 1e-3:
        raise InputDataError(f"{path0}: ImageOrientationPatient rows and columns are not orthogonal "
                             f"(cosine {float(r @ c):.2g})")
    normal = np.cross(r, c)
    pos = np.stack(positions)
    depth = pos @ normal
    order = np.argsort(depth, kind="stable")
    depth, pos = depth[order], pos[order]
    steps = np.diff(depth)
    names = [headers[i][0].name for i in order]
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        k = int(dup[0])
        raise InputDataError(f"{folder}: {names[k]} and {names[k + 1]} lie at the same position along the "
                             "slice normal (several echoes, phases or acquisitions in one folder?); put one "
                             "volume per folder")
    n = len(order)
    mean = (depth[-1] - depth[0]) / (n - 1)
    worst = int(np.argmax(np.abs(steps - mean)))
    if abs(steps[worst] - mean) > tol * mean + 1e-4:
        raise InputDataError(f"{folder}: uneven slice spacing: steps from {steps.min():.4g} to "
                             f"{steps.max():.4g} mm (mean {mean:.4g} mm, {names[worst]} -> "
                             f"{names[worst + 1]}); missing slices? (allowed deviation: {tol:.0%}, "
                             "spacing_tolerance=)")
    step = (pos[-1] - pos[0]) / (n - 1)
    off_line = np.linalg.norm(pos - pos[0] - np.arange(n)[:, None] * step, axis=1)
    if off_line.max() > tol * np.linalg.norm(step) + 1e-4:
        k = int(np.argmax(off_line))
        raise InputDataError(f"{folder}: {names[k]} is {off_line[k]:.3g} mm off the line through the first "
                             "and last slices; the slices do not form one regular stack")
    lps = np.eye(4)
    lps[:3, 0] = r * spacing0[1]
    lps[:3, 1] = c * spacing0[0]
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    return {"order": [int(i) for i in order], "rows": rows, "cols": cols, "affine": LPS_TO_RAS @ lps}


def _read_pixels(pydicom, path: pathlib.Path, rows: int, cols: int) -> np.ndarray:
    """One slice, ``(rows, cols)`` float64, rescaled by its own RescaleSlope/RescaleIntercept."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several unrelated types for damaged files
        raise FileFormatError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing decoders for compressed syntaxes, truncated data, ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = ""
        if syntax is not None and syntax.is_compressed:
            hint = (f" (transfer syntax {syntax.name}: a compressed series needs pydicom's decoder plugins, "
                    "e.g. `pip install pylibjpeg pylibjpeg-libjpeg`)")
        raise FileFormatError(f"{path}: cannot decode the pixel data ({type(exc).__name__}: {exc}){hint}"
                              ) from exc
    if pixels.shape != (rows, cols):
        raise InputDataError(f"{path}: pixel data of shape {pixels.shape}, expected ({rows}, {cols})")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float64) * slope + intercept


def save_dicom_series(
    directory: str | os.PathLike,
    volume: torch.Tensor | np.ndarray,
    affine: np.ndarray,
    *,
    rescale: tuple[float, float] | None = None,
    series_description: str = "diffrecon",
    patient_name: str = "Anonymous",
    patient_id: str = "anonymous",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    overwrite: bool = False,
) -> list[pathlib.Path]:
    """Write a 3-D volume as a CT DICOM series (one file per slice, ``IM0001.dcm``, ...), atomically.

    Args:
        directory: the output folder; it must be new or empty, or (with ``overwrite``) hold only
            ``.dcm`` files, which are then replaced as a whole.
        volume: ``(Columns, Rows, n_slices)``, the voxel order :func:`load_dicom_series` returns.
        affine: 4×4 RAS+ millimetre voxel-to-world affine; its first two columns (the row and column
            directions) must be orthogonal, as DICOM image planes are. Slice ``k`` is placed at
            ``affine @ (0, 0, k, 1)``, so a third column off the plane normal gives a tilted stack.
        rescale: ``(slope, intercept)``: stored int16 = round((value − intercept) / slope). Default: (1, 0)
            when every value is an integer in the int16 range (CT in HU), else the slope and intercept
            that spread the value range over the full int16 range (error ≤ slope / 2).
        series_description: SeriesDescription (at most 64 characters are kept).
        patient_name: PatientName.
        patient_id: PatientID.
        study_uid: StudyInstanceUID to reuse (to add a series to an existing study); generated with
            ``pydicom.uid.generate_uid`` when None, as are the SeriesInstanceUID and every SOPInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID to reuse (series that share one coordinate frame);
            generated when None.
        series_number: SeriesNumber.
        overwrite: replace an existing series folder.

    Returns:
        The written files, slice 0 first.

    :func:`load_dicom_series` reads the series back with equal values (to the quantisation) and an
    equal affine when the third column points along ``r × c`` (the normal of the row and column
    directions in LPS, i.e. ``det(A_lps[:3, :3]) > 0``); otherwise it returns the same physical volume
    with axis 2 reversed and the affine to match, since DICOM readers order slices along the normal.

    Raises:
        InputDataError: a volume that is not 3-D or holds NaN/Inf, a bad affine, or values that do not
            fit int16 with the given ``rescale``.
        MissingDependencyError: pydicom is not installed.
    """
    pydicom = require("pydicom", "data")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from .atomic import atomic_directory

    arr = (volume.detach().cpu().double().numpy() if isinstance(volume, torch.Tensor)
           else np.asarray(volume, dtype=np.float64))
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputDataError(f"save_dicom_series: expected a 3-D volume (columns, rows, slices), found shape "
                             f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise InputDataError(f"save_dicom_series: expected finite values, found "
                             f"{int((~np.isfinite(arr)).sum())} NaN/Inf")
    lps, r, c, normal, d_col, d_row = _plane_axes(affine)
    slope, intercept = _rescale(arr, rescale)
    stored = np.round((arr - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise InputDataError(f"save_dicom_series: values {arr.min():.6g}..{arr.max():.6g} do not fit int16 "
                             f"with slope {slope:g}, intercept {intercept:g}; pass rescale=None")
    stored = stored.astype("<i2")
    n_cols, n_rows, n_slices = arr.shape
    ds_num = pydicom.valuerep.format_number_as_ds
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    thickness = abs(float(lps[:3, 2] @ normal))
    written = []
    with atomic_directory(directory, overwrite, replaceable_suffix=".dcm") as tmp:
        for k in range(n_slices):
            position = lps[:3, 3] + k * lps[:3, 2]
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
            ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
            ds.Modality, ds.Manufacturer = "CT", "diffrecon"
            ds.SeriesDescription = series_description[:64]
            ds.PatientName, ds.PatientID = patient_name, patient_id
            ds.PatientBirthDate, ds.PatientSex = "", ""
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
            ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = int(series_number), k + 1, 1
            ds.KVP = ""
            ds.ImagePositionPatient = [ds_num(float(v)) for v in position]
            ds.ImageOrientationPatient = [ds_num(float(v)) for v in (*r, *c)]
            ds.PixelSpacing = [ds_num(d_row), ds_num(d_col)]
            ds.SliceThickness = ds_num(thickness)
            ds.SliceLocation = ds_num(float(position @ normal))
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = n_rows, n_cols
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = ds_num(slope), ds_num(intercept)
            ds.RescaleType = "HU"
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            name = f"IM{k + 1:04d}.dcm"
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
            written.append(pathlib.Path(directory) / name)
    return written


def _plane_axes(affine) -> tuple:
    """LPS affine, unit row/column directions, their normal and the column/row spacings of ``affine``."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise InputDataError(f"save_dicom_series: expected a finite 4x4 affine, found shape {a.shape}")
    lps = LPS_TO_RAS @ a
    d_col, d_row = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    if min(d_col, d_row) <= 0:
        raise InputDataError("save_dicom_series: the affine's first two columns must be non-zero")
    r, c = lps[:3, 0] / d_col, lps[:3, 1] / d_row
    if abs(float(r @ c)) > 1e-4:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(r @ c)))))
        raise InputDataError(f"save_dicom_series: DICOM image rows and columns are orthogonal, the affine's "
                             f"first two columns make {angle:.3f} degrees; resample the volume first")
    normal = np.cross(r, c)
    if abs(float(lps[:3, 2] @ normal)) < 1e-6 * max(1.0, float(np.linalg.norm(lps[:3, 2]))):
        raise InputDataError("save_dicom_series: the affine's third column lies in the image plane; "
                             "slices would coincide")
    return lps, r, c, normal, d_col, d_row


def _rescale(arr: np.ndarray, rescale) -> tuple[float, float]:
    """(slope, intercept) as the DS strings will store them, so quantising and reading back agree."""
    from pydicom.valuerep import format_number_as_ds

    if rescale is not None:
        slope, intercept = (float(v) for v in rescale)
        if not (math.isfinite(slope) and slope > 0 and math.isfinite(intercept)):
            raise InputDataError(f"save_dicom_series: rescale must be (slope > 0, intercept) finite, found "
                                 f"{rescale!r}")
    elif np.array_equal(arr, np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767:
        slope, intercept = 1.0, 0.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
        slope = (hi - lo) / 65535.0 if hi > lo else 1.0
        intercept = lo + 32768.0 * slope
    return float(format_number_as_ds(slope)), float(format_number_as_ds(intercept))
