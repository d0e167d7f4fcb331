"""Image-quality metrics: PSNR and SSIM, per slice and per anatomical plane of a volume.

Conventions: the data range defaults to the reference's (max − min); a volume's per-plane score is
the mean over the slices of that orientation of the per-slice score (as 3-D diffusion papers report
axial / coronal / sagittal numbers), skipping slices whose reference is empty (all values within
1e-6·range of the reference minimum), where PSNR is undefined.
"""

from __future__ import annotations

import math
from typing import Mapping

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


def psnr(x, ref, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio 10·log10(range² / MSE) in dB (inf for a perfect match)."""
    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    mse = float(np.mean((x - ref) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(rng**2 / mse)


def ssim(x, ref, data_range: float | None = None) -> float:
    """Structural similarity of 2-D images (scikit-image; Gaussian window σ = 1.5 as in Wang et al.,
    or, for images smaller than that 11-pixel window, a uniform window of the largest odd size that fits)."""
    from skimage.metrics import structural_similarity

    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if min(ref.shape) >= 11:
        kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        side = min(ref.shape)
        if side < 3:
            raise InputDataError(f"ssim: images must be at least 3x3, found {ref.shape}")
        kw = {"win_size": side if side % 2 else side - 1}
    return float(structural_similarity(x, ref, data_range=rng, **kw))


def plane_metrics(
    x, ref, planes: Mapping[str, int] | None = None, data_range: float | None = None
) -> dict[str, dict[str, float]]:
    """Per-plane mean PSNR and SSIM of a 3-D volume.

    Args:
        x: estimate, shape ``(D, H, W)``.
        ref: reference of the same shape.
        planes: plane name → array axis the slices of that plane are taken along
            (default axial 0, coronal 1, sagittal 2 for ``(z, y, x)`` volumes).
        data_range: intensity range for both metrics (default: the reference volume's range).

    Returns:
        ``{"psnr": {plane: dB}, "ssim": {plane: value}}``.
    """
    x, ref = _np(x), _np(ref)
    _check_pair(x, ref)
    if ref.ndim != 3:
        raise InputDataError(f"plane_metrics: expected 3-D volumes, found shape {ref.shape}")
    planes = dict(DEFAULT_PLANES if planes is None else planes)
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    out: dict[str, dict[str, float]] = {"psnr": {}, "ssim": {}}
    for name, axis in planes.items():
        ps, ss = [], []
        for k in range(ref.shape[axis]):
            r = np.take(ref, k, axis=axis)
            if r.max() - ref.min() <= 1e-6 * rng:
                continue
            e = np.take(x, k, axis=axis)
            ps.append(psnr(e, r, rng))
            ss.append(ssim(e, r, rng))
        out["psnr"][name] = float(np.mean(ps)) if ps else math.nan
        out["ssim"][name] = float(np.mean(ss)) if ss else math.nan
    return out
