"""Image-quality metrics: PSNR and SSIM, per slice and per anatomical plane of a volume.

Conventions: the data range defaults to the reference's (max − min); a volume's per-plane score is
the mean over the slices of that orientation of the per-slice score (as 3-D diffusion papers report
axial / coronal / sagittal numbers), skipping slices where the reference holds no object: fewer than
``min_object_fraction`` (1 %) of its pixels above ``object_level`` (5 %) of the range over the
reference minimum. On such slices (the padding around a head, or the air above it) PSNR is undefined
or meaninglessly large — a method that returns exact zeros there scores 100 dB on each — and a few of
them would dominate a mean of decibels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from .errors import InputDataError

DEFAULT_PLANES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_pair(x: np.ndarray, ref: np.ndarray) -> None:
    if x.shape != ref.shape:
        raise InputDataError(f"metric: estimate shape {x.shape} does not match reference shape {ref.shape}")


def _data_range(ref: np.ndarray, data_range: float | None, what: str) -> float:
    """The peak value of PSNR/SSIM: ``data_range`` or the reference's max − min; refuses a zero range."""
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not (math.isfinite(rng) and rng > 0):
        given = "the reference is constant" if data_range is None else f"data_range={data_range}"
        raise InputDataError(f"{what}: the data range must be finite and > 0 ({given}); pass data_range")
    return rng


def psnr(x, ref, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio 10·log10(range² / MSE) in dB (inf for a perfect match).

    Raises:
        InputDataError: shapes differ, or the range is zero (a constant reference without ``data_range``).
    """
    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    rng = _data_range(ref, data_range, "psnr")
    mse = float(np.mean((x - ref) ** 2))
    return math.inf if mse == 0 else float(_psnr_db(mse, rng))


def ssim(x, ref, data_range: float | None = None) -> float:
    """Structural similarity of 2-D images (scikit-image; Gaussian window σ = 1.5 as in Wang et al.,
    or, for images smaller than that 11-pixel window, a uniform window of the largest odd size that fits)."""
    from skimage.metrics import structural_similarity

    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    rng = _data_range(ref, data_range, "ssim")
    if min(ref.shape) >= 11:
        kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        side = min(ref.shape)
        if side < 3:
            raise InputDataError(f"ssim: images must be at least 3x3, found {ref.shape}")
        kw = {"win_size": side if side % 2 else side - 1}
    return float(structural_similarity(x, ref, data_range=rng, **kw))


def plane_metrics(
    x: torch.Tensor | np.ndarray,
    ref: torch.Tensor | np.ndarray,
    planes: Mapping[str, int] | None = None,
    data_range: float | None = None,
    object_level: float = 0.05,
    min_object_fraction: float = 0.01,
) -> dict[str, dict[str, float]]:
    """Per-plane mean PSNR and SSIM of a 3-D volume.

    Args:
        x: estimate, shape ``(D, H, W)``.
        ref: reference of the same shape.
        planes: plane name → array axis the slices of that plane are taken along
            (default axial 0, coronal 1, sagittal 2 for ``(z, y, x)`` volumes).
        data_range: intensity range for both metrics (default: the reference volume's range).
        object_level: a reference pixel is "object" above ``min + object_level · range``.
        min_object_fraction: slices with a smaller fraction of object pixels are skipped (module
            docstring); 0 keeps every slice that is not exactly empty.

    Returns:
        ``{"psnr": {plane: dB}, "ssim": {plane: value}}``.
    """
    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    if ref.ndim != 3:
        raise InputDataError(f"plane_metrics: expected 3-D volumes, found shape {ref.shape}")
    planes = dict(DEFAULT_PLANES if planes is None else planes)
    rng = _data_range(ref, data_range, "plane_metrics")
    out: dict[str, dict[str, float]] = {"psnr": {}, "ssim": {}}
    for name, axis in planes.items():
        ps, ss = [], []
        for k in range(ref.shape[axis]):
            r = np.take(ref, k, axis=axis)
            if (np.mean(r - ref.min() > object_level * rng) < min_object_fraction
                    or r.max() - ref.min() <= 1e-6 * rng):
                continue
            e = np.take(x, k, axis=axis)
            ps.append(psnr(e, r, rng))
            ss.append(ssim(e, r, rng))
        out["psnr"][name] = float(np.mean(ps)) if ps else math.nan
        out["ssim"][name] = float(np.mean(ss)) if ss else math.nan
    return out


# ---------------------------------------------------------------------------------------------------
# Hyperspectral metrics. Cubes are (H, W, B) arrays or tensors (rows, columns, bands); per-band
# scores are averaged over bands. Peak / data range defaults to 1.0 (cubes scaled to [0, 1], the
# convention of the HSI restoration literature and of DDS2M's own MPSNR).
# ---------------------------------------------------------------------------------------------------
def _check_cube_pair(x: np.ndarray, ref: np.ndarray, who: str) -> None:
    _check_pair(x, ref)
    if ref.ndim != 3:
        raise InputDataError(f"{who}: expected cubes of shape (H, W, B), found shape {ref.shape}")
    if not (np.isfinite(x).all() and np.isfinite(ref).all()):
        raise InputDataError(f"{who}: expected finite values, found NaN or Inf")


def _psnr_db(mse, data_range: float):
    """``10·log10(range² / mse)`` in dB, element-wise, for a NumPy array or a torch tensor of MSEs.

    The one PSNR formula behind :func:`band_psnr` / :func:`mpsnr` (NumPy, float64, on the host) and
    :func:`mpsnr_tensor` (torch, any dtype, on the tensor's device); ``mse`` is already floored by the
    caller, and a zero MSE gives inf.
    """
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(data_range**2 / mse)
    return 10.0 * np.log10(data_range**2 / mse)


def band_psnr(x, ref, data_range: float = 1.0) -> np.ndarray:
    """Per-band PSNR (dB), shape ``(B,)``: ``10·log10(range² / MSE_b)``, MSE_b over the band's pixels."""
    x, ref = _np(x), _np(ref)
    _check_cube_pair(x, ref, "band_psnr")
    mse = np.mean((x - ref) ** 2, axis=(0, 1))
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, _psnr_db(np.maximum(mse, 1e-300), float(data_range)))


def mpsnr(x, ref, data_range: float = 1.0) -> float:
    """Mean PSNR over bands (dB) of cubes ``(H, W, B)``: ``(1/B) Σ_b 10·log10(range² / MSE_b)``.

    Example: ref = 0 everywhere, x = 0.1 in band 0 and 0.01 in band 1 (range 1) → PSNR 20 and 40 dB,
    MPSNR 30 dB.
    """
    return float(np.mean(band_psnr(x, ref, data_range)))


def mpsnr_tensor(
    x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, mse_floor: float = 0.0
) -> torch.Tensor:
    """Mean PSNR over bands (dB) of cubes ``(..., H, W, B)`` as a torch tensor on their device.

    The same formula as :func:`mpsnr` (``(1/B) Σ_b 10·log10(range² / MSE_b)``), computed in torch
    without leaving the device or synchronising it (no NaN checks), so an iterative solver can score
    every iterate; leading batch dimensions give one value each (result shape ``x.shape[:-3]``). The
    per-band MSE is floored at ``mse_floor``: with the default 0 a band that matches exactly scores
    inf (as :func:`mpsnr` does); a floor such as 1e-20 caps it at ``10·log10(range² / floor)`` dB.

    Args:
        x: estimate. ref: reference of the same shape (any floating dtype; the result has x's dtype).
        data_range: peak value (1.0 for cubes in [0, 1]). mse_floor: lower bound of each band's MSE.

    Raises:
        InputDataError: for mismatched shapes or fewer than three dimensions.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(ref, torch.Tensor)):
        raise InputDataError("mpsnr_tensor: expected torch tensors (use mpsnr for arrays)")
    if x.shape != ref.shape:
        raise InputDataError(
            f"mpsnr_tensor: estimate shape {tuple(x.shape)} does not match reference shape {tuple(ref.shape)}"
        )
    if x.ndim < 3:
        raise InputDataError(f"mpsnr_tensor: expected cubes (..., H, W, B), found shape {tuple(x.shape)}")
    mse = (x - ref).pow(2).mean(dim=(-3, -2)).clamp_min(float(mse_floor))
    return _psnr_db(mse, float(data_range)).mean(-1)


def mssim(x, ref, data_range: float = 1.0) -> float:
    """Mean SSIM over bands: :func:`ssim` of every ``(H, W)`` band image with the given data range."""
    x, ref = _np(x), _np(ref)
    _check_cube_pair(x, ref, "mssim")
    return float(np.mean([ssim(x[..., b], ref[..., b], data_range) for b in range(ref.shape[-1])]))


def sam(x, ref, degrees: bool = True, eps: float = 1e-12) -> float:
    """Spectral angle mapper: mean over pixels of ``arccos(⟨x_p, r_p⟩ / (‖x_p‖ ‖r_p‖))``.

    Pixels whose reference spectrum is zero are skipped; an estimate spectrum of zero against a
    non-zero reference counts as 90°. Returned in degrees (``degrees=False``: radians).
    """
    x, ref = _np(x), _np(ref)
    _check_cube_pair(x, ref, "sam")
    xs, rs = x.reshape(-1, x.shape[-1]), ref.reshape(-1, ref.shape[-1])
    nr, nx = np.linalg.norm(rs, axis=1), np.linalg.norm(xs, axis=1)
    keep = nr > eps
    if not keep.any():
        raise InputDataError("sam: every reference spectrum is zero; the spectral angle is undefined")
    cos = np.where(nx[keep] > eps, (xs[keep] * rs[keep]).sum(1) / (nr[keep] * np.maximum(nx[keep], eps)), 0.0)
    ang = np.arccos(np.clip(cos, -1.0, 1.0))
    m = float(np.mean(ang))
    return math.degrees(m) if degrees else m


def ergas(x, ref, ratio: float = 1.0, eps: float = 1e-12) -> float:
    """ERGAS (Wald): ``100 · ratio · sqrt((1/B) Σ_b RMSE_b² / μ_b²)``, μ_b the reference band mean.

    ``ratio`` is the ratio of high- to low-resolution pixel size (1/4 for ×4 super-resolution);
    the default 1 suits denoising and inpainting. Lower is better, 0 is perfect.
    """
    x, ref = _np(x), _np(ref)
    _check_cube_pair(x, ref, "ergas")
    rmse2 = np.mean((x - ref) ** 2, axis=(0, 1))
    mu = np.mean(ref, axis=(0, 1))
    if np.any(np.abs(mu) <= eps):
        raise InputDataError("ergas: a reference band has zero mean; ERGAS is undefined")
    return float(100.0 * float(ratio) * math.sqrt(float(np.mean(rmse2 / mu**2))))


def hsi_metrics(x, ref, data_range: float = 1.0, ratio: float = 1.0) -> dict[str, float]:
    """``{"mpsnr", "mssim", "sam", "ergas"}`` of an estimate against a reference cube."""
    return {"mpsnr": mpsnr(x, ref, data_range), "mssim": mssim(x, ref, data_range), "sam": sam(x, ref),
            "ergas": ergas(x, ref, ratio)}
