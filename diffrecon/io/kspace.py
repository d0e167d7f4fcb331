"""Multi-coil k-space files: fastMRI-style HDF5 (``.h5``) and NumPy archives (``.npz``).

Layout (both formats, same names):

==========  =======================================  ==============================================
name        shape / dtype                            meaning
==========  =======================================  ==============================================
kspace      ``(S, C, kx, ky)`` complex (required)     centred k-space, slices × coils × rows × columns;
                                                     a single-coil ``(S, kx, ky)`` file gets C = 1
mask        ``(ky,)``, ``(kx, ky)`` or ``(S, kx, ky)``  sampling mask (optional: inferred from the
                                                     non-zero k-space entries when absent)
maps        ``(C, kx, ky)`` or ``(S, C, kx, ky)``        coil sensitivities (optional, diffrecon)
target      ``(S, kx, ky)`` real                     ground-truth magnitude (optional, simulations)
affine      ``(4, 4)`` float                         voxel-to-world affine of the image volume (optional)
nifti_hdr   ``(348,)`` or ``(540,)`` uint8             the source volume's raw NIfTI header (optional;
                                                     :func:`~diffrecon.io.nifti.header_bytes`), so the
                                                     reconstruction keeps its codes, units and pixdim
==========  =======================================  ==============================================

Scalar metadata (``slice_axis``: which axis of the output NIfTI volume the slices S run along;
``acceleration``, ``noise_std``, anything in ``attrs``) are HDF5 file attributes, or a JSON string under
``attrs`` in ``.npz``. Real fastMRI files (``kspace``, ``mask``, ``ismrmrd_header``,
``reconstruction_rss``, attributes ``acquisition``, ``max``, ``norm``, ``patient_id``) load as they are;
their readout is oversampled (kx twice the image size), which SENSE handles as a larger field of view.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FileFormatError, InputDataError, require
from .atomic import atomic_path, check_writable
from .sinogram import npz_declared

Tensor = torch.Tensor

__all__ = ["KSpaceData", "load_kspace", "save_kspace"]


@dataclass
class KSpaceData:
    """Contents of a k-space file (tensors on the CPU).

    Attributes:
        kspace: ``(S, C, H, W)`` complex64.
        mask: bool, ``(H, W)`` or per-slice ``(S, H, W)``.
        maps: complex64 ``(C, H, W)`` / ``(S, C, H, W)``, or None.
        target: float32 ``(S, H, W)`` or None.
        affine: ``(4, 4)`` float64 or None.
        header: the source volume's NIfTI header (nibabel), or None when the file stores none.
        slice_axis: output-volume axis of the slices (default 2).
        attrs: remaining scalar metadata.
    """

    kspace: Tensor
    mask: Tensor
    maps: Tensor | None = None
    target: Tensor | None = None
    affine: np.ndarray | None = None
    slice_axis: int = 2
    attrs: dict = field(default_factory=dict)
    header: object | None = None

    @property
    def acceleration(self) -> float:
        m = self.mask
        return float(m.numel() / max(int(m.sum()), 1))


def _format(path: pathlib.Path) -> str:
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        return "h5"
    if name.endswith(".npz"):
        return "npz"
    raise FileFormatError(
        f"{path}: expected a .h5/.hdf5 (fastMRI-style) or .npz k-space file, found suffix "
        f"{''.join(path.suffixes) or '(none)'}"
    )


def _check_kspace_array(k: np.ndarray, where: str) -> np.ndarray:
    if not np.iscomplexobj(k):
        hint = (
            " (real/imaginary pairs in a trailing axis of 2? convert with k[..., 0] + 1j * k[..., 1])"
            if k.ndim >= 1 and k.shape[-1] == 2
            else ""
        )
        raise FileFormatError(f"{where}: expected complex k-space, found dtype {k.dtype}{hint}")
    if k.ndim == 3:  # fastMRI single-coil: (slices, kx, ky)
        k = k[:, None]
    if k.ndim != 4:
        raise FileFormatError(
            f"{where}: expected k-space of rank 4 (slices, coils, kx, ky) or 3 (single-coil "
            f"slices, kx, ky), found rank {k.ndim} with shape {k.shape}"
        )
    if 0 in k.shape:
        raise FileFormatError(f"{where}: k-space is empty, shape {k.shape}")
    if not np.isfinite(k).all():
        raise InputDataError(
            f"{where}: expected finite k-space values, found {int((~np.isfinite(k)).sum())} NaN/Inf"
        )
    return k.astype(np.complex64, copy=False)


def _check_mask(m: np.ndarray | None, k: np.ndarray, where: str) -> np.ndarray:
    s, _, h, w = k.shape
    if m is None:  # infer: sampled where any coil of any slice is non-zero
        m = (np.abs(k) > 0).any(axis=(0, 1))
        if not m.any():
            raise InputDataError(f"{where}: no mask stored and the k-space is zero everywhere")
        return m
    m = np.asarray(m)
    if np.iscomplexobj(m) or not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
        raise FileFormatError(f"{where}: expected a real or boolean mask, found dtype {m.dtype}")
    ok = {1: [(w,)], 2: [(h, w), (1, w), (h, 1)], 3: [(s, h, w), (s, 1, w)]}
    if m.ndim not in ok or tuple(m.shape) not in ok[m.ndim]:
        raise FileFormatError(
            f"{where}: mask shape {m.shape} does not match k-space {k.shape}; expected (ky,)=({w},), "
            f"(kx, ky)=({h}, {w}) or (slices, kx, ky)=({s}, {h}, {w})"
        )
    m = m != 0
    if m.ndim == 1:
        m = np.broadcast_to(m[None, :], (h, w))
    elif m.ndim == 2:
        m = np.broadcast_to(m, (h, w))
    else:
        m = np.broadcast_to(m, (s, h, w))
    if not m.any():
        raise InputDataError(f"{where}: the mask samples no k-space location")
    return np.array(m, copy=True)


def _check_maps(maps: np.ndarray | None, k: np.ndarray, where: str) -> np.ndarray | None:
    if maps is None:
        return None
    s, c, h, w = k.shape
    if tuple(maps.shape) not in ((c, h, w), (s, c, h, w)):
        raise FileFormatError(
            f"{where}: coil maps shape {maps.shape} does not match k-space {k.shape}; expected "
            f"({c}, {h}, {w}) or ({s}, {c}, {h}, {w})"
        )
    return maps.astype(np.complex64, copy=False)


# the entries a k-space file may hold, with the layout each must have (for error messages)
_LAYOUT = {
    "kspace": "complex (slices, coils, kx, ky)",
    "mask": "(ky,), (kx, ky) or (slices, kx, ky)",
    "maps": "complex (coils, kx, ky) or (slices, coils, kx, ky)",
    "target": "real (slices, kx, ky)",
    "affine": "4x4",
    "nifti_hdr": "uint8 (348,) or (540,): a raw NIfTI header",
}


def _check_declared(shape, dtype, key: str, path) -> None:
    """Refuse an entry from its declared shape and dtype, before its data are read: one that would
    need more memory than :func:`~diffrecon.io.sinogram.check_memory` allows (the reconstruction
    then holds several arrays of that size)."""
    from .sinogram import check_declared_array

    check_declared_array(shape, dtype, max(np.dtype(dtype).itemsize, 8), str(path), f"the {key} entry")


def load_kspace(path: str | os.PathLike) -> KSpaceData:
    """Read a k-space file (``.h5``/``.hdf5`` fastMRI-style, or ``.npz``); see the module docstring.

    Raises:
        FileFormatError: missing file, unknown suffix, unreadable file, no ``kspace`` entry, an entry
            that is an HDF5 group instead of a dataset, wrong rank, non-complex k-space, or a
            mask/maps/target whose shape does not match the k-space.
        InputDataError: NaN/Inf k-space, an empty mask, or an entry whose declared shape would need
            more memory than the limit (checked from the header, before the data are read).
    """
    p = pathlib.Path(path)
    fmt = _format(p)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file (expected a k-space {fmt} file)")
    entries: dict = {}
    attrs: dict = {}
    if fmt == "h5":
        h5py = require("h5py", "mri")
        try:
            with h5py.File(p, "r") as f:
                names = list(f.keys())
                if "kspace" not in f:
                    raise FileFormatError(
                        f"{p}: expected a 'kspace' dataset (slices, coils, kx, ky), found datasets "
                        f"{names or 'none'}"
                    )
                for key in _LAYOUT:
                    if key in f:
                        if not isinstance(f[key], h5py.Dataset):
                            raise FileFormatError(
                                f"{p}: '{key}' is an HDF5 {type(f[key]).__name__.lower()}, not a dataset; "
                                f"expected a {key} array ({_LAYOUT[key]})"
                            )
                        _check_declared(f[key].shape, f[key].dtype, key, p)
                for key in _LAYOUT:
                    if key in f:
                        entries[key] = f[key][()]
                for key, value in f.attrs.items():
                    attrs[key] = value.item() if isinstance(value, np.generic) else value
        except (FileFormatError, InputDataError):
            raise
        except OSError as exc:
            raise FileFormatError(f"{p}: not a readable HDF5 file ({exc})") from exc
    else:
        import zipfile

        try:
            with np.load(p, allow_pickle=False) as z:
                if "kspace" not in z.files:
                    raise FileFormatError(f"{p}: expected a 'kspace' array, found arrays {z.files or 'none'}")
                for key in _LAYOUT:
                    if key in z.files:
                        _check_declared(*npz_declared(z, key, str(p)), key, p)
                for key in ("kspace", "mask", "maps", "target", "affine", "nifti_hdr", "slice_axis", "attrs"):
                    if key in z.files:
                        entries[key] = z[key]
        except (FileFormatError, InputDataError):
            raise
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise FileFormatError(f"{p}: not a readable .npz archive ({exc})") from exc
        if "attrs" in entries:
            try:
                attrs = json.loads(str(entries.pop("attrs")))
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{p}: 'attrs' is not valid JSON ({exc})") from exc
        if "slice_axis" in entries:
            attrs["slice_axis"] = int(entries.pop("slice_axis"))

    k = _check_kspace_array(np.asarray(entries["kspace"]), str(p))
    mask = _check_mask(entries.get("mask"), k, str(p))
    maps = _check_maps(entries.get("maps"), k, str(p))
    target = entries.get("target")
    if target is not None:
        target = np.asarray(target)
        if tuple(target.shape) != (k.shape[0], *k.shape[2:]):
            raise FileFormatError(
                f"{p}: target shape {target.shape} does not match k-space {k.shape}; expected "
                f"{(k.shape[0], *k.shape[2:])}"
            )
        target = torch.from_numpy(np.abs(target).astype(np.float32))
    affine = entries.get("affine")
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise FileFormatError(f"{p}: expected a 4x4 affine, found shape {affine.shape}")
    slice_axis = int(attrs.pop("slice_axis", 2))
    if slice_axis not in (0, 1, 2):
        raise FileFormatError(f"{p}: slice_axis must be 0, 1 or 2, found {slice_axis}")
    header = None
    if entries.get("nifti_hdr") is not None:
        from .nifti import header_from_bytes

        header = header_from_bytes(np.asarray(entries["nifti_hdr"]), f"{p}: nifti_hdr")
    return KSpaceData(
        kspace=torch.from_numpy(np.ascontiguousarray(k)),
        mask=torch.from_numpy(mask),
        maps=None if maps is None else torch.from_numpy(np.ascontiguousarray(maps)),
        target=target,
        affine=affine,
        slice_axis=slice_axis,
        attrs=attrs,
        header=header,
    )


def _np(t):
    if t is None:
        return None
    if isinstance(t, Tensor):
        return t.detach().cpu().resolve_conj().numpy()
    return np.asarray(t)


def save_kspace(
    path: str | os.PathLike,
    kspace: Tensor | np.ndarray,
    mask: Tensor | np.ndarray | None = None,
    maps: Tensor | np.ndarray | None = None,
    target: Tensor | np.ndarray | None = None,
    affine: np.ndarray | None = None,
    slice_axis: int = 2,
    attrs: dict | None = None,
    overwrite: bool = False,
    header=None,
) -> pathlib.Path:
    """Write k-space (and optional mask, maps, target, affine, metadata) atomically.

    ``header``: the source volume's NIfTI header (nibabel, or the uint8 array of
    :func:`~diffrecon.io.nifti.header_bytes`), stored as ``nifti_hdr``.

    The format follows the suffix: ``.h5``/``.hdf5`` (fastMRI layout: datasets ``kspace`` complex64
    ``(S, C, kx, ky)``, ``mask``, … and file attributes) or ``.npz``. Everything is validated as
    :func:`load_kspace` would, so a file written here always loads back.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    p = check_writable(path, overwrite)
    fmt = _format(p)
    k = _check_kspace_array(_np(kspace), "save_kspace")
    m = _check_mask(_np(mask), k, "save_kspace")
    mp = _check_maps(_np(maps), k, "save_kspace")
    tg = _np(target)
    if tg is not None and tuple(tg.shape) != (k.shape[0], *k.shape[2:]):
        raise InputDataError(f"save_kspace: target shape {tg.shape} does not match k-space {k.shape}")
    af = None if affine is None else np.asarray(affine, dtype=np.float64)
    if af is not None and af.shape != (4, 4):
        raise InputDataError(f"save_kspace: expected a 4x4 affine, found shape {af.shape}")
    if slice_axis not in (0, 1, 2):
        raise InputDataError(f"save_kspace: slice_axis must be 0, 1 or 2, found {slice_axis}")
    hdr = None
    if header is not None:
        from .nifti import header_bytes, header_from_bytes

        hdr = np.asarray(header if isinstance(header, np.ndarray) else header_bytes(header), np.uint8)
        header_from_bytes(hdr, "save_kspace header")  # refuse bytes that would not load back
    meta = dict(attrs or {})
    meta["slice_axis"] = int(slice_axis)
    with atomic_path(p, overwrite) as tmp:
        if fmt == "h5":
            h5py = require("h5py", "mri")
            with h5py.File(tmp, "w") as f:
                f.create_dataset("kspace", data=k)
                f.create_dataset("mask", data=m)
                if mp is not None:
                    f.create_dataset("maps", data=mp)
                if tg is not None:
                    f.create_dataset("target", data=np.asarray(tg, dtype=np.float32))
                if af is not None:
                    f.create_dataset("affine", data=af)
                if hdr is not None:
                    f.create_dataset("nifti_hdr", data=hdr)
                for key, value in meta.items():
                    f.attrs[key] = value
        else:
            arrays = {"kspace": k, "mask": m, "attrs": np.array(json.dumps(meta))}
            if mp is not None:
                arrays["maps"] = mp
            if tg is not None:
                arrays["target"] = np.asarray(tg, dtype=np.float32)
            if af is not None:
                arrays["affine"] = af
            if hdr is not None:
                arrays["nifti_hdr"] = hdr
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    return p
