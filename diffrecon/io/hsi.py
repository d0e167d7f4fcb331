"""Hyperspectral cubes as ``xarray.DataArray``: dims ``(y, x, band)``, wavelengths in nm.

Data model:

* dims ``("y", "x", "band")`` — rows, columns, spectral bands; any sizes (non-square, any band count);
* coordinate ``wavelength`` along ``band`` (nm, float; NaN when unknown) and ``band`` = 0…B−1;
* attrs: free-form metadata (``provenance``, ``units``, ``semi_synthetic`` …).

Readers: NetCDF (``.nc``, written by :func:`save_cube` or any file with a 3-D variable), MATLAB
``.mat`` (v5 via scipy; v7.3/HDF5 via h5py), ENVI (``.hdr`` + data file, via ``spectral``).
Writer: NetCDF, atomic (temporary file + rename) and never clobbering an existing file unless
``overwrite=True``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import FileFormatError, InputDataError, require
from .atomic import atomic_path, check_writable

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["make_cube", "cube_to_tensor", "tensor_to_cube", "load_cube", "save_cube", "load_mask", "DIMS"]

DIMS = ("y", "x", "band")


def make_cube(
    data: np.ndarray | torch.Tensor | Sequence,
    wavelengths: Sequence[float] | None = None,
    name: str | None = None,
    attrs: Mapping | None = None,
    band_axis: int = -1,
):
    """Wrap an array as a cube ``DataArray`` with dims ``(y, x, band)``.

    Args:
        data: array-like or tensor with 3 dimensions.
        wavelengths: band centres in nm (length B); ``None`` → NaN.
        name: variable name.
        attrs: metadata.
        band_axis: which axis of ``data`` holds the bands (moved last).
    """
    import xarray as xr

    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise InputDataError(f"a hyperspectral cube needs 3 dimensions (y, x, band), found shape {arr.shape}")
    if band_axis not in (-1, 2):
        arr = np.moveaxis(arr, band_axis, -1)
    b = arr.shape[-1]
    if wavelengths is None:
        wl = np.full(b, np.nan)
    else:
        wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
        if wl.size != b:
            raise InputDataError(f"got {wl.size} wavelengths for {b} bands")
    return xr.DataArray(
        arr,
        dims=DIMS,
        coords={"band": np.arange(b), "wavelength": ("band", wl)},
        name=name,
        attrs=dict(attrs or {}),
    )


def cube_to_tensor(
    cube, device=None, dtype: torch.dtype = torch.float32, allow_nan: bool = False
) -> torch.Tensor:
    """A cube ``DataArray`` (or array) → tensor ``(H, W, B)``; checks dims and finiteness."""
    from ..operators.hsi import check_cube

    if hasattr(cube, "dims"):
        if set(cube.dims) != set(DIMS):
            raise InputDataError(f"expected a cube with dims {DIMS}, found {tuple(cube.dims)}")
        cube = cube.transpose(*DIMS).values
    arr = np.asarray(cube)
    if arr.ndim != 3:
        raise InputDataError(f"expected a cube of shape (H, W, B), found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputDataError(f"expected a real numeric cube, found dtype {arr.dtype}")
    t = torch.as_tensor(arr.astype(np.float64 if dtype == torch.float64 else np.float32), device=device)
    return check_cube(t.to(dtype), "cube", allow_nan=allow_nan)


def tensor_to_cube(t: torch.Tensor, like=None, name: str | None = None, attrs: Mapping | None = None):
    """Tensor ``(H, W, B)`` → cube, copying wavelengths (and attrs) from ``like`` when given."""
    wl = None if like is None else like.coords["wavelength"].values
    merged = dict(like.attrs) if like is not None else {}
    merged.update(attrs or {})
    return make_cube(t.detach().float().cpu().numpy(), wavelengths=wl, name=name, attrs=merged)


# -------------------------------------------------------------------------------------------
# readers
# -------------------------------------------------------------------------------------------
def _pick_3d(named: Mapping[str, np.ndarray], variable: str | None, path) -> tuple[str, np.ndarray]:
    if variable is not None:
        if variable not in named:
            raise FileFormatError(f"{path}: no variable {variable!r}; found {sorted(named)}")
        return variable, named[variable]
    cands = {
        k: v for k, v in named.items() if getattr(v, "ndim", 0) == 3 and np.issubdtype(v.dtype, np.number)
    }
    if not cands:
        raise FileFormatError(f"{path}: no 3-D numeric variable found (variables: {sorted(named)})")
    for pref in ("cube", "img_clean", "data", "image", "hsi", "y"):
        if pref in cands:
            return pref, cands[pref]
    k = max(cands, key=lambda n: cands[n].size)
    return k, cands[k]


def _wavelengths_from(named: Mapping[str, np.ndarray], b: int) -> np.ndarray | None:
    for key in ("wavelength", "wavelengths", "wl", "bands", "lambda"):
        if key in named:
            wl = np.asarray(named[key], dtype=np.float64).reshape(-1)
            if wl.size == b:
                return wl
    return None


def _load_mat(path: pathlib.Path, variable: str | None, band_axis: int):
    from scipy.io import loadmat

    try:
        raw = loadmat(str(path))
        named = {k: v for k, v in raw.items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        h5py = require("h5py", "mri")
        named = {}
        with h5py.File(path, "r") as f:
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    _check_declared(v.shape, v.dtype, k, path)
                    named[k] = np.asarray(v).T  # MATLAB stores column-major: reverse the axes
    except (ValueError, OSError) as exc:
        raise FileFormatError(f"{path}: not a readable MATLAB file ({exc})") from exc
    key, arr = _pick_3d(named, variable, path)
    arr = np.moveaxis(arr, band_axis, -1) if band_axis not in (-1, 2) else arr
    wl = _wavelengths_from(named, arr.shape[-1])
    return make_cube(arr, wavelengths=wl, name=key, attrs={"source_file": str(path), "source_variable": key})


def _load_envi(path: pathlib.Path):
    spectral = require("spectral", "hsi")
    hdr = path if path.suffix.lower() == ".hdr" else path.with_suffix(".hdr")
    if not hdr.exists():
        raise FileFormatError(f"{path}: ENVI header {hdr} not found")
    try:
        img = spectral.envi.open(str(hdr))
    except Exception as exc:  # noqa: BLE001 - spectral raises many exception types
        raise FileFormatError(f"{path}: cannot read ENVI image ({type(exc).__name__}: {exc})") from exc
    _check_declared(img.shape, img.dtype, hdr.stem, hdr)
    try:
        arr = np.asarray(img.load())
    except Exception as exc:  # noqa: BLE001 - spectral raises many exception types
        raise FileFormatError(f"{path}: cannot read ENVI image ({type(exc).__name__}: {exc})") from exc
    wl = None
    meta_wl = img.metadata.get("wavelength")
    if meta_wl is not None and len(meta_wl) == arr.shape[-1]:
        wl = np.asarray([float(v) for v in meta_wl])
        units = str(img.metadata.get("wavelength units", "nm")).lower()
        if units.startswith("micro") or units in ("um", "µm"):
            wl = wl * 1000.0
    return make_cube(arr, wavelengths=wl, name=hdr.stem, attrs={"source_file": str(hdr)})


def _check_declared(shape, dtype, name, path) -> None:
    """Refuse a cube from its declared shape and dtype, before reading it: a NetCDF/HDF5 file of a few
    KB can declare 20000 x 20000 x 100 values (unwritten chunks cost nothing on disk). The estimate is
    the stored array plus the float64 working copy that restoration makes."""
    from .sinogram import check_declared_array

    check_declared_array(shape, dtype, np.dtype(dtype).itemsize + 8, str(path), f"the cube {name!r}")


# dimension names seen in NetCDF/ENVI-derived cubes, mapped by name (never by position: a
# (bands, rows, cols) file renamed positionally would be processed transposed)
_DIM_ALIASES = {
    "y": {"y", "row", "rows", "line", "lines", "lat", "latitude", "height", "northing"},
    "x": {"x", "col", "cols", "column", "columns", "sample", "samples", "lon", "longitude", "width",
          "easting"},
    "band": {"band", "bands", "wavelength", "wavelengths", "lambda", "spectral", "channel", "channels", "wl"},
}


def _dims_by_name(path: pathlib.Path, dims: tuple) -> dict:
    """``{file dim: cube dim}`` from the dimension names; refuses dims it cannot tell apart."""
    mapping = {}
    for d in dims:
        hits = [cube_dim for cube_dim, names in _DIM_ALIASES.items() if str(d).lower() in names]
        if len(hits) == 1:
            mapping[d] = hits[0]
    if sorted(mapping.values()) != sorted(DIMS) or len(mapping) != 3:
        raise FileFormatError(
            f"{path}: cannot tell rows, columns and bands apart from the dims {dims}; rename them to "
            f"{DIMS} (e.g. xarray's .rename) — they are matched by name, never by position"
        )
    return {k: v for k, v in mapping.items() if k != v}


def _check_classic_netcdf(path: pathlib.Path) -> None:
    """A NetCDF-3 (classic or 64-bit offset) file stores its data uncompressed after the header; when it
    is truncated, the netCDF library reads the missing part as zeros without a word. Mapping the file
    (no data read) with scipy's reader checks that every declared variable fits in the file."""
    with open(path, "rb") as fh:
        if fh.read(4) not in (b"CDF\x01", b"CDF\x02"):
            return
    import warnings

    from scipy.io import netcdf_file

    try:
        nc = netcdf_file(path, mmap=True)
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for short or corrupt files
        raise FileFormatError(
            f"{path}: a truncated or corrupt NetCDF-3 file ({type(exc).__name__}: {exc})"
        ) from exc
    nc.variables.clear()  # drop the mapped arrays so the file closes cleanly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nc.close()


def _load_nc(path: pathlib.Path, variable: str | None):
    import xarray as xr

    _check_classic_netcdf(path)
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"{path}: not a readable NetCDF file ({type(exc).__name__}: {exc})") from exc
    with ds:
        names = (
            [variable]
            if variable
            else (
                [v for v in ds.data_vars if set(ds[v].dims) == set(DIMS)]
                or [v for v in ds.data_vars if ds[v].ndim == 3]
            )
        )
        if not names or names[0] not in ds:
            raise FileFormatError(f"{path}: no cube variable found (variables: {list(ds.data_vars)})")
        name = "cube" if "cube" in names else names[0]
        if ds[name].ndim != 3:
            raise FileFormatError(
                f"{path}: variable {name!r} has dims {tuple(ds[name].dims)}; a cube needs 3 (y, x, band)"
            )
        _check_declared(ds[name].shape, ds[name].dtype, name, path)
        da = ds[name].load()
        da.attrs = {**ds.attrs, **da.attrs}
    if set(da.dims) != set(DIMS):
        da = da.rename(_dims_by_name(path, tuple(da.dims)))
    da = da.transpose(*DIMS)
    if "wavelength" not in da.coords:
        da = da.assign_coords(wavelength=("band", np.full(da.sizes["band"], np.nan)))
    return da


def load_cube(path: str | os.PathLike, variable: str | None = None, band_axis: int = -1) -> xr.DataArray:
    """Read a cube from NetCDF (``.nc``), MATLAB (``.mat``) or ENVI (``.hdr``/``.img``/``.dat``).

    Args:
        path: file path.
        variable: variable name in a ``.nc``/``.mat`` file (default: ``cube``, else the only or
            largest 3-D numeric variable; DDS2M's ``img_clean`` is recognised).
        band_axis: for ``.mat`` files, which axis holds the bands (default last, DDS2M's H×W×C).

    Returns:
        cube ``DataArray`` with dims ``(y, x, band)``.

    Raises:
        FileFormatError: missing/unreadable file or no 3-D variable (also when ``variable`` names one
            that is not 3-D).
        InputDataError: a NetCDF, HDF5 ``.mat`` or ENVI cube whose declared shape would need more memory
            than the limit (:func:`~diffrecon.io.sinogram.check_memory`), refused before it is read.
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file")
    suf = p.suffix.lower()
    if suf in (".nc", ".nc4", ".netcdf", ".cdf"):
        return _load_nc(p, variable)
    if suf == ".mat":
        return _load_mat(p, variable, band_axis)
    if suf in (".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip") or p.with_suffix(".hdr").exists():
        return _load_envi(p)
    raise FileFormatError(f"{p}: unknown hyperspectral format {suf!r}; expected .nc, .mat or ENVI (.hdr)")


def load_mask(
    path: str | os.PathLike, shape: Sequence[int] | None = None, variable: str | None = None
) -> torch.Tensor:
    """Read a boolean observation mask (True = observed) from ``.nc``/``.mat``/``.npy``."""
    p = pathlib.Path(path)
    if p.suffix.lower() == ".npy":
        if not p.exists():
            raise FileFormatError(f"{p}: no such file")
        arr = np.load(p, allow_pickle=False)
    else:
        arr = load_cube(p, variable=variable).values
    mask = torch.as_tensor(np.asarray(arr) != 0)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise InputDataError(f"{p}: mask shape {tuple(mask.shape)} does not match the cube {tuple(shape)}")
    return mask


# -------------------------------------------------------------------------------------------
# writer
# -------------------------------------------------------------------------------------------
def _clean_attrs(attrs: Mapping) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (str, int, float, np.integer, np.floating)):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(e, (int, float)) for e in v):
            out[k] = np.asarray(v)
        else:
            out[k] = str(v)
    return out


def save_cube(
    path: str | os.PathLike,
    cube,
    overwrite: bool = False,
    extra: Mapping | None = None,
    attrs: Mapping | None = None,
) -> pathlib.Path:
    """Write a cube (and optional extra variables, e.g. the degraded input or a mask) to NetCDF.

    The file holds variable ``cube`` with dims ``(y, x, band)`` and coordinate ``wavelength``;
    ``extra`` maps names to cubes (``DataArray`` or array of a compatible shape). Written atomically;
    raises :class:`~diffrecon.errors.OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    import xarray as xr

    if not hasattr(cube, "dims"):
        cube = make_cube(cube)
    check_writable(path, overwrite)
    variables = {
        "cube": cube.transpose(*DIMS).drop_attrs() if hasattr(cube, "drop_attrs") else cube.transpose(*DIMS)
    }
    for k, v in (extra or {}).items():
        if not hasattr(v, "dims"):
            v = make_cube(v if np.asarray(v).dtype != bool else np.asarray(v).astype(np.int8))
        if v.dtype == bool:
            v = v.astype(np.int8)
        variables[k] = v.drop_vars([c for c in ("band", "wavelength") if c in v.coords])
    ds = xr.Dataset(variables)
    ds.attrs = _clean_attrs({**cube.attrs, **(attrs or {})})
    ds.attrs.setdefault("Conventions", "CF-1.8")
    ds.attrs["dims"] = "y, x, band; wavelength in nm"
    engine = "netcdf4"
    try:
        import netCDF4  # noqa: F401
    except ImportError:
        engine = "scipy"
    with atomic_path(path, overwrite, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine=engine)
    return pathlib.Path(path)
