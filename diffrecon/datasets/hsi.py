"""Hyperspectral benchmark data that works offline.

No real hyperspectral cube (Indian Pines, Pavia, CAVE, ICVL, …) ships in any installable package,
so the benchmarks use

* **semi-synthetic cubes** (:func:`semi_synthetic_cube`): *real spatial structure* × *real
  reflectance spectra*, mixed with a bilinear (Fan) model and topographic shading. They are
  labelled ``semi-synthetic`` in their attributes and everywhere they are reported.
* the **real Sentinel-2 crop** that ``spyndex`` ships (:func:`sentinel2_cube`): 300×300 pixels,
  4 bands (B02 490 nm, B03 560 nm, B04 665 nm, B08 842 nm) at 10 m, surface reflectance.

Real spectra (:func:`spectral_library`) come from the files bundled with the ``spectral`` (SPy)
package: the ECOSTRESS library's *Construction Concrete*, *lichen off trees* and *Acer rubrum*
(red maple leaf) and a RELAB sample (``bkr1mm074ws``), in reflectance. They are resampled onto the
requested band centres with Gaussian spectral response functions whose FWHM equals the band
spacing.

Spatial structure sources (``source=``):

* ``"sentinel"``: the Sentinel-2 crop — abundances from NDVI (vegetation → leaf), visible brightness
  (→ concrete), darkness (→ lichen) and bare-soil index (→ RELAB sample);
* ``"natural"``: scikit-image's bundled photographs (astronaut, coffee, chelsea, rocket) —
  abundances from their colour channels.

Mixing model per pixel p (abundances ``a ≥ 0``, ``Σ a = 1``, endmember spectra ``e_i``):

.. math::  x_p = \\ell_p \\Big[ \\sum_i a_{p,i} e_i
           + \\gamma \\sum_{i<j} a_{p,i} a_{p,j}\\, e_i \\odot e_j \\Big]

with shading ``ℓ_p ∈ [0.6, 1]`` (a smoothed real image band) and bilinear strength γ
(``nonlinear``); the cube is then divided by its maximum so it lies in [0, 1] like the paper's data.
Everything is deterministic given ``seed`` (which picks the crop location and the image).
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

import numpy as np

from ..errors import FileFormatError, InputDataError

__all__ = [
    "SENTINEL2_WAVELENGTHS",
    "spectral_library",
    "sentinel2_array",
    "sentinel2_cube",
    "semi_synthetic_cube",
    "benchmark_cubes",
    "default_wavelengths",
]

SENTINEL2_BANDS = ("B02", "B03", "B04", "B08")
SENTINEL2_WAVELENGTHS = (490.0, 560.0, 665.0, 842.0)  # nm, band centres

_SPECTRA = {
    # name: (relative path under spectral/tests/data, parser)
    "concrete": ("ecostress/a.spectrum.txt", "ecostress"),
    "lichen": ("ecostress/b.spectrum.txt", "ecostress"),
    "maple_leaf": ("ecostress/c.spectrum.txt", "ecostress"),
    "relab_bkr1mm074ws": ("relab/data/mem/mm/bkr1mm074ws.txt", "relab"),
}


def default_wavelengths(
    n_bands: int = 31, wavelength_range: tuple[float, float] = (400.0, 1000.0)
) -> np.ndarray:
    """``n_bands`` band centres (nm) evenly spaced over ``wavelength_range`` (inclusive)."""
    if int(n_bands) < 1:
        raise InputDataError(f"n_bands must be >= 1, found {n_bands}")
    lo, hi = float(wavelength_range[0]), float(wavelength_range[1])
    if not 0 < lo <= hi:
        raise InputDataError(f"wavelength_range must be increasing and positive, found {wavelength_range}")
    return np.linspace(lo, hi, int(n_bands)) if n_bands > 1 else np.array([(lo + hi) / 2])


def _spectral_data_dir() -> pathlib.Path:
    from ..errors import require

    spectral = require("spectral", "hsi")
    return pathlib.Path(spectral.__file__).parent / "tests" / "data"


def _read_spectrum(path: pathlib.Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength nm, reflectance in [0, 1]) from an ECOSTRESS or RELAB text file."""
    if not path.exists():
        raise FileFormatError(f"bundled spectrum {path} is missing (is the 'spectral' package complete?)")
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            continue
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue
    arr = np.array(rows)
    wl, refl = arr[:, 0] * 1000.0, arr[:, 1]  # micrometres → nm
    if kind == "ecostress":
        refl = refl / 100.0  # percent → fraction
    order = np.argsort(wl)
    return wl[order], np.clip(refl[order], 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _raw_library() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root = _spectral_data_dir()
    return {name: _read_spectrum(root / rel, kind) for name, (rel, kind) in _SPECTRA.items()}


def spectral_library(wavelengths=None):
    """Real reflectance spectra resampled to ``wavelengths`` (nm).

    Returns:
        ``xarray.DataArray`` of shape ``(endmember, band)`` with coordinate ``wavelength`` (nm) and
        values in [0, 1]; attrs name the source files.
    """
    import xarray as xr

    wl = default_wavelengths() if wavelengths is None else np.asarray(wavelengths, dtype=float)
    if wl.ndim != 1 or wl.size < 1:
        raise InputDataError(f"spectral_library: expected a 1-D array of wavelengths, found shape {wl.shape}")
    spacing = float(np.median(np.diff(wl))) if wl.size > 1 else 10.0
    fwhm = max(spacing, 1.0)
    sd = fwhm / (2 * math.sqrt(2 * math.log(2)))
    lib = _raw_library()
    out = np.zeros((len(lib), wl.size))
    for i, (_, (w0, r0)) in enumerate(lib.items()):
        if wl.min() < w0.min() - 1e-6 or wl.max() > w0.max() + 1e-6:
            raise InputDataError(
                f"spectral_library: wavelengths {wl.min():.0f}–{wl.max():.0f} nm fall outside a "
                f"bundled spectrum's range {w0.min():.0f}–{w0.max():.0f} nm"
            )
        for k, c in enumerate(wl):
            wts = np.exp(-0.5 * ((w0 - c) / sd) ** 2)
            if wts.sum() < 1e-12:  # coarse sampling: interpolate instead
                out[i, k] = np.interp(c, w0, r0)
            else:
                out[i, k] = (wts * r0).sum() / wts.sum()
    return xr.DataArray(
        out,
        dims=("endmember", "band"),
        coords={"endmember": list(lib), "wavelength": ("band", wl)},
        attrs={
            "units": "reflectance",
            "source": "spectral (SPy) bundled ECOSTRESS/RELAB files: "
            + ", ".join(r for r, _ in _SPECTRA.values()),
        },
    )


@functools.lru_cache(maxsize=1)
def sentinel2_array() -> np.ndarray:
    """The spyndex Sentinel-2 crop as float64 reflectance, shape ``(300, 300, 4)`` (y, x, band)."""
    from ..errors import require

    spyndex = require("spyndex", "hsi")
    path = pathlib.Path(spyndex.__file__).parent / "data" / "S2_10m.json"
    if not path.exists():
        raise FileFormatError(f"spyndex's Sentinel-2 file {path} is missing")
    arr = np.asarray(json.loads(path.read_text()), dtype=np.float64)  # (4, 300, 300), reflectance × 10000
    return np.moveaxis(arr, 0, -1) / 10000.0


def sentinel2_cube(
    height: int | None = None,
    width: int | None = None,
    offset: tuple[int, int] = (0, 0),
    normalize: bool = True,
):
    """The **real** 4-band Sentinel-2 10 m crop shipped with ``spyndex`` as a cube ``(y, x, band)``.

    Args:
        height: optional crop height in pixels (default: the full 300).
        width: optional crop width in pixels (default: the full 300).
        offset: top-left corner of the crop.
        normalize: divide by the crop's maximum so values lie in [0, 1] (reflectance otherwise).
    """
    from ..io.hsi import make_cube

    arr = sentinel2_array()
    h = arr.shape[0] if height is None else int(height)
    w = arr.shape[1] if width is None else int(width)
    oy, ox = int(offset[0]), int(offset[1])
    if oy < 0 or ox < 0 or oy + h > arr.shape[0] or ox + w > arr.shape[1] or h < 1 or w < 1:
        raise InputDataError(f"sentinel2_cube: crop {h}x{w} at {offset} does not fit the 300x300 scene")
    crop = arr[oy : oy + h, ox : ox + w]
    scale = float(crop.max()) if normalize else 1.0
    return make_cube(
        crop / scale,
        wavelengths=SENTINEL2_WAVELENGTHS,
        name="sentinel2",
        attrs={
            "provenance": "real: Sentinel-2 L2A 10 m crop bundled with spyndex (S2_10m.json), "
            "bands B02 B03 B04 B08",
            "semi_synthetic": 0,
            "reflectance_scale": scale,
            "crop_offset": [oy, ox],
        },
    )


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    return resize(img, shape, order=1, anti_aliasing=True, mode="reflect")


def _crop(rng: np.random.Generator, img: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random crop of the requested aspect ratio, resized to (height, width)."""
    hh, ww = img.shape[:2]
    scale = min(hh / height, ww / width)
    scale = min(scale, max(1.0, scale * rng.uniform(0.5, 1.0)))  # zoom in at random when there is room
    ch, cw = max(1, int(height * scale)), max(1, int(width * scale))
    oy = int(rng.integers(0, hh - ch + 1))
    ox = int(rng.integers(0, ww - cw + 1))
    return _resize(img[oy : oy + ch, ox : ox + cw], (height, width))


def _softmax(f: np.ndarray, temperature: float) -> np.ndarray:
    z = f / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _standardize(f: np.ndarray) -> np.ndarray:
    return (f - f.mean((0, 1))) / (f.std((0, 1)) + 1e-12)


def _abundances(
    source: str, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, str]:
    """(abundances (H, W, 4) summing to 1, shading (H, W) in [0.6, 1], description)."""
    from scipy.ndimage import gaussian_filter

    if source == "sentinel":
        s2 = _crop(rng, sentinel2_array(), height, width)
        b, g, r, n = (s2[..., i] for i in range(4))
        ndvi = (n - r) / (n + r + 1e-6)
        vis = (b + g + r) / 3
        bare = (r - g) / (r + g + 1e-6) - ndvi
        feats = np.stack(
            [_standardize(vis), _standardize(-vis - n), _standardize(ndvi), _standardize(bare)], -1
        )
        shade_src = n / (n.max() + 1e-12)
        desc = (
            "Sentinel-2 crop (spyndex): brightness→concrete, darkness→lichen, NDVI→maple leaf, "
            "bare index→RELAB"
        )
    elif source == "natural":
        from skimage import data as skdata

        names = ["astronaut", "coffee", "chelsea", "rocket"]
        name = names[int(rng.integers(len(names)))]
        rgb = getattr(skdata, name)().astype(np.float64) / 255.0
        img = _crop(rng, rgb, height, width)
        gray = img.mean(-1)
        feats = np.stack(
            [
                _standardize(img[..., 0]),
                _standardize(img[..., 1]),
                _standardize(img[..., 2]),
                _standardize(1 - gray),
            ],
            -1,
        )
        mix = np.eye(4) + 0.3 * rng.standard_normal((4, 4))
        feats = feats @ mix
        shade_src = gray
        desc = f"scikit-image photograph '{name}' (colour channels → abundances of the 4 spectra)"
    else:
        raise InputDataError(f"semi_synthetic_cube: source must be 'sentinel' or 'natural', found {source!r}")
    abund = _softmax(feats, temperature=0.6)
    shade = gaussian_filter(shade_src, sigma=2.0, mode="reflect")
    shade = 0.6 + 0.4 * (shade - shade.min()) / (np.ptp(shade) + 1e-12)
    return abund, shade, desc


def semi_synthetic_cube(
    source: str = "sentinel",
    height: int = 64,
    width: int = 64,
    n_bands: int = 31,
    wavelength_range: tuple[float, float] = (400.0, 1000.0),
    seed: int = 0,
    nonlinear: float = 0.5,
    shading: bool = True,
):
    """A seeded **semi-synthetic** cube: real spatial structure × real spectra (module docstring).

    Args:
        source: ``"sentinel"`` (real Sentinel-2 spatial structure) or ``"natural"`` (photographs).
        height: cube height H (any positive value; ≥ 64 for the benchmarks).
        width: cube width W (≥ 64 for the benchmarks).
        n_bands: band count B (≥ 31 for the benchmarks).
        wavelength_range: band centres are evenly spaced over this range in nm (within 400–2400).
        seed: picks the crop (and image); the same seed gives the same cube everywhere.
        nonlinear: bilinear (Fan model) interaction strength γ; 0 gives a linear mixture.
        shading: multiply by a smooth real-image shading map in [0.6, 1].

    Returns:
        ``xarray.DataArray`` ``(y, x, band)`` in [0, 1] with a ``wavelength`` coordinate (nm) and
        attrs ``semi_synthetic = 1``, ``provenance``, ``seed``, ``abundance_source``, ``spectra``.
    """
    from ..io.hsi import make_cube

    if min(int(height), int(width)) < 4:
        raise InputDataError(f"semi_synthetic_cube: need at least 4x4 pixels, found {height}x{width}")
    rng = np.random.default_rng(int(seed))
    wl = default_wavelengths(n_bands, wavelength_range)
    lib = spectral_library(wl)
    e = lib.values  # (4, B)
    abund, shade, desc = _abundances(source, int(height), int(width), rng)
    cube = np.einsum("hwk,kb->hwb", abund, e)
    if nonlinear:
        k = e.shape[0]
        for i in range(k):
            for j in range(i + 1, k):
                cube += nonlinear * (abund[..., i] * abund[..., j])[..., None] * (e[i] * e[j])[None, None, :]
    if shading:
        cube *= shade[..., None]
    cube /= cube.max()
    return make_cube(
        cube.astype(np.float32),
        wavelengths=wl,
        name=f"semi-synthetic-{source}",
        attrs={
            "provenance": "semi-synthetic: real spatial structure x real reflectance spectra (see attrs)",
            "semi_synthetic": 1,
            "seed": int(seed),
            "abundance_source": desc,
            "spectra": ", ".join(lib.coords["endmember"].values.tolist()) + " (" + lib.attrs["source"] + ")",
            "mixing": f"bilinear Fan model, gamma={nonlinear}; shading={'yes' if shading else 'no'}; "
            "divided by the cube maximum",
        },
    )


def benchmark_cubes(height: int = 64, width: int = 64, n_bands: int = 31, seed: int = 0) -> dict:
    """The benchmark set: two semi-synthetic cubes (Sentinel-2 and photograph structure) of the
    requested size, keyed ``"semi-synthetic-sentinel"`` and ``"semi-synthetic-natural"``."""
    return {
        f"semi-synthetic-{s}": semi_synthetic_cube(s, height, width, n_bands, seed=seed + i)
        for i, s in enumerate(("sentinel", "natural"))
    }
