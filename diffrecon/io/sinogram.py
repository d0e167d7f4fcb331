"""Sinograms (and cone-beam projections) as ``.npz`` with their geometry stored beside the data.

File layout (all keys are plain arrays, no pickles):

* ``sinogram``: float32, ``(n_slices, n_angles, n_detectors)`` for a 2-D geometry applied slice by
  slice, or ``(n_angles, det_rows, det_cols)`` for a cone-beam geometry;
* ``geometry``: the geometry's JSON (``ParallelGeometry.to_dict()`` etc.) as a string;
* ``metadata``: JSON string: ``slice_axis`` (which axis of the source volume the slices were taken
  along), ``volume_shape``, ``affine`` (4×4, of the source volume), ``noise``, ``seed``, ``source`` ...;
* ``nifti_header`` (optional): uint8, the source volume's raw NIfTI header
  (:func:`~diffrecon.io.nifti.header_bytes`: 348 bytes for NIfTI-1, 540 for NIfTI-2), so a
  reconstruction can be written with the source's qform/sform codes, units, ``pixdim`` and the rest.
  Files without it (older files, sinograms written by other tools) load with ``header`` None and are
  reconstructed with their ``affine`` alone.

:func:`load_sinogram` gives the data back with an operator that maps a volume in the source's voxel
order to exactly this sinogram.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FileFormatError, GeometryError, InputDataError
from ..operators._joseph2d import RAY_TABLE_BYTES
from ..operators.geometry import geometry_from_dict
from .atomic import atomic_path

FORMAT_VERSION = 1


@dataclass
class SinogramFile:
    """A sinogram as read by :func:`load_sinogram`: the data, its geometry, the metadata JSON and the
    source volume's NIfTI header (a nibabel header, or None when the file stores none)."""

    sinogram: torch.Tensor
    geometry: object
    metadata: dict = field(default_factory=dict)
    header: object | None = None

    @property
    def affine(self) -> np.ndarray:
        """The source volume's 4×4 voxel-to-mm affine: the metadata's ``affine``, else the stored header's
        (sform, else qform), else the identity."""
        if "affine" in self.metadata:
            return np.asarray(self.metadata["affine"], dtype=np.float64)
        if self.header is not None:
            return np.asarray(self.header.get_best_affine(), dtype=np.float64)
        return np.eye(4)

    @property
    def slice_axis(self) -> int:
        return int(self.metadata.get("slice_axis", 0))

    def operator(self):
        """The forward operator volume → ``sinogram`` (``SliceWise`` around a 2-D projector)."""
        from ..operators.ct import operator_from_geometry
        from ..operators.slicewise import SliceWise

        op = operator_from_geometry(self.geometry)
        if self.geometry.kind == "cone":
            return op
        return SliceWise(op, axis=self.slice_axis, n_slices=int(self.sinogram.shape[0]))


def save_sinogram(
    path: str | os.PathLike,
    sinogram: torch.Tensor | np.ndarray,
    geometry,
    metadata: dict | None = None,
    overwrite: bool = False,
    header=None,
) -> None:
    """Write ``sinogram`` and its geometry atomically to ``path`` (``.npz``).

    ``header``: the source volume's NIfTI header (a nibabel NIfTI-1/NIfTI-2 header, or the uint8 array
    :func:`~diffrecon.io.nifti.header_bytes` gave), stored as the ``nifti_header`` entry; None stores
    none (the reconstruction then gets the metadata's ``affine`` alone).
    """
    from .nifti import header_bytes, header_from_bytes

    arr = sinogram.detach().cpu().numpy() if isinstance(sinogram, torch.Tensor) else np.asarray(sinogram)
    _check_matches(arr.shape, geometry, str(path))
    extra = {}
    if header is not None:
        raw = header if isinstance(header, np.ndarray) else header_bytes(header)
        header_from_bytes(raw, f"save_sinogram {path}")  # refuse bytes that would not load back
        extra["nifti_header"] = np.asarray(raw, dtype=np.uint8)
    meta = dict(metadata or {})
    meta["format_version"] = FORMAT_VERSION
    if "affine" in meta:
        meta["affine"] = np.asarray(meta["affine"], dtype=np.float64).tolist()
    with atomic_path(path, overwrite, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                sinogram=arr.astype(np.float32),
                geometry=np.array(json.dumps(geometry.to_dict())),
                metadata=np.array(json.dumps(meta)),
                **extra,
            )


def load_sinogram(path: str | os.PathLike, device: torch.device | str = "cpu") -> SinogramFile:
    """Read a file written by :func:`save_sinogram`; validates the data against the geometry."""
    if not os.path.exists(path):
        raise FileFormatError(f"{path}: no such file (expected a sinogram .npz)")
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            missing = {"sinogram", "geometry"} - set(z.files)
            if missing:
                raise FileFormatError(
                    f"{path}: expected arrays 'sinogram' and 'geometry', missing {sorted(missing)}"
                )
            geom_json = str(z["geometry"])
            meta = json.loads(str(z["metadata"])) if "metadata" in z.files else {}
            try:
                geometry = geometry_from_dict(json.loads(geom_json))
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{path}: geometry entry is not valid JSON ({exc})") from exc
            # everything below is checked from the array's header, before its data are read
            shape, dtype = npz_declared(z, "sinogram", str(path))
            if not np.issubdtype(dtype, np.floating):
                raise InputDataError(f"{path}: expected a floating-point sinogram, found dtype {dtype}")
            _check_matches(shape, geometry, str(path))
            _check_metadata(meta, shape, geometry, str(path))
            check_volume_memory(_volume_voxels(shape, geometry), str(path))
            check_memory(math.prod(shape) * (dtype.itemsize + 4) + _rays(geometry) * RAY_TABLE_BYTES,
                         str(path), f"the {'x'.join(map(str, shape))} {dtype} sinogram and its projector")
            header = _read_header(z, str(path)) if "nifti_header" in z.files else None
            arr = z["sinogram"]
    except (FileFormatError, InputDataError, GeometryError):
        raise
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path}: not a readable diffrecon sinogram .npz ({type(exc).__name__}: {exc})"
        ) from exc
    if not np.isfinite(arr).all():
        raise InputDataError(
            f"{path}: expected finite sinogram values, found {int((~np.isfinite(arr)).sum())} NaN/Inf"
        )
    return SinogramFile(torch.from_numpy(arr).to(device), geometry, meta, header)


def _read_header(z, where: str):
    """The ``nifti_header`` entry as a nibabel header; its size is checked before it is read."""
    from .nifti import NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES, header_from_bytes

    shape, dtype = npz_declared(z, "nifti_header", where)
    if dtype != np.uint8 or shape not in ((NIFTI1_HEADER_BYTES,), (NIFTI2_HEADER_BYTES,)):
        raise FileFormatError(f"{where}: entry 'nifti_header' must be 348 or 540 uint8 bytes (a NIfTI-1 "
                              f"or NIfTI-2 header), found {dtype} of shape {shape}; rewrite it with "
                              "header_bytes()")
    return header_from_bytes(z["nifti_header"], f"{where}: nifti_header")


def npz_declared(z, name: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``name`` of an open ``np.load`` archive ``z``, read from the ``.npy``
    header alone (a few bytes, even when the member is compressed), so sizes can be checked before a
    small file expands into a huge array."""
    try:
        with z.zip.open(f"{name}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # a newer header: let np.load read it (the data are then read to learn the shape)
                arr = z[name]
                return tuple(arr.shape), arr.dtype
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FileFormatError(f"{where}: cannot read the header of array {name!r} ({exc})") from exc
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _rays(geometry) -> int:
    if geometry.kind == "cone":
        return 0  # the cone-beam projector is matrix-free and keeps no per-ray tables
    return int(geometry.n_angles) * int(geometry.n_detectors)


def _volume_voxels(shape: tuple, geometry) -> int:
    if geometry.kind == "cone":
        return math.prod(geometry.volume_shape)
    return int(shape[0]) * math.prod(geometry.image_shape)


def memory_limit_bytes() -> float | None:
    """The memory diffrecon allows one input or result to take, in bytes: ``DIFFRECON_MAX_VOLUME_GB``
    (GiB) when that is set, else half of this machine's physical RAM; ``None`` when neither is known."""
    limit_gb = os.environ.get("DIFFRECON_MAX_VOLUME_GB")
    if limit_gb is not None:
        try:
            limit = float(limit_gb)
        except ValueError:
            limit = math.nan
        if not (math.isfinite(limit) and limit > 0):
            raise InputDataError(
                f"DIFFRECON_MAX_VOLUME_GB={limit_gb!r}: expected a positive number of GiB"
            ) from None
        return limit * 2**30
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None  # no way to know the memory here


def check_memory(nbytes: float, where: str, what: str, per: str = "") -> None:
    """Refuse, before allocating, work whose arrays are estimated at ``nbytes``: more than
    :func:`memory_limit_bytes` (half the RAM, or ``DIFFRECON_MAX_VOLUME_GB``) would end in the kernel's
    OOM killer or in swap, minutes later and without a message.

    ``what`` describes the estimate (e.g. ``"the sinogram of 8 slices x 10^9 views x 91 bins"``); the
    error reads ``"{where}: {what} would need N GiB{per}, more than the limit of L GiB (...)"``.

    Raises:
        InputDataError: the estimate is over the limit.
    """
    limit = memory_limit_bytes()
    if limit is None or nbytes <= limit:
        return
    raise InputDataError(
        f"{where}: {what} would need {_gib(nbytes)} GiB{per}, more than the limit of "
        f"{_gib(limit)} GiB (half the RAM, or DIFFRECON_MAX_VOLUME_GB)"
    )


def _gib(nbytes: float) -> str:
    g = nbytes / 2**30
    return f"{g:,.1f}" if g >= 1 else f"{g:.2g}"


def check_declared_array(shape, dtype, bytes_per_value: int, where: str, label: str) -> None:
    """:func:`check_memory` for an array known only from its header (``shape``, ``dtype``), before it is
    read: a file of a few KB can declare terabytes. ``bytes_per_value`` counts the stored value and the
    working copies the caller will make; the estimate reads ``"{label} of shape (…) (dtype)"``."""
    shape = tuple(int(d) for d in shape)
    check_memory(math.prod(shape) * bytes_per_value, where, f"{label} of shape {shape} ({np.dtype(dtype)})")


def check_volume_memory(voxels: int, where: str, bytes_per_voxel: int = 4) -> None:
    """Refuse, before allocating, a reconstruction whose volume alone would take more than the memory
    limit (:func:`check_memory`; iterative methods hold several such volumes)."""
    check_memory(voxels * bytes_per_voxel, where, f"the reconstruction of {voxels:,} voxels", " per volume")


def _check_metadata(meta: dict, shape: tuple, geometry, where: str) -> None:
    """The metadata's slice axis and volume shape must be integers that agree with the data."""
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where}: metadata must be a JSON object, found {type(meta).__name__}")
    axis = meta.get("slice_axis", 0)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise FileFormatError(f"{where}: metadata slice_axis must be an integer 0, 1 or 2, found {axis!r}")
    vshape = meta.get("volume_shape")
    if vshape is None or geometry.kind == "cone":
        return
    if not (isinstance(vshape, list) and len(vshape) == 3 and all(isinstance(v, int) for v in vshape)):
        raise FileFormatError(f"{where}: metadata volume_shape must be three integers, found {vshape!r}")
    if not -3 <= axis < 3:
        return  # the operator reports a bad axis with its own message
    expected = list(geometry.image_shape)
    expected.insert(axis % 3, int(shape[0]))
    if list(vshape) != expected:
        raise InputDataError(
            f"{where}: metadata volume_shape {vshape} does not match the data ({shape[0]} slices along axis "
            f"{axis} of {tuple(geometry.image_shape)} images = {expected})"
        )


def _check_matches(shape: tuple, geometry, where: str) -> None:
    if geometry.kind == "cone":
        expected = tuple(geometry.projection_shape)
        if tuple(shape) != expected:
            raise InputDataError(f"{where}: cone-beam projections must have shape {expected} "
                                 f"(angles, rows, cols), found {tuple(shape)}")
        return
    if geometry.kind not in ("parallel", "fan"):
        raise GeometryError(f"{where}: unknown geometry kind {geometry.kind!r}")
    expected = tuple(geometry.sinogram_shape)
    if len(shape) != 3 or tuple(shape[1:]) != expected:
        raise InputDataError(
            f"{where}: sinogram must have shape (n_slices, {expected[0]} angles, {expected[1]} detectors) "
            f"to match its geometry, found {tuple(shape)}"
        )
