"""Figures people would rather look at than read: orthogonal-plane montages with error maps."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from .io.atomic import atomic_path
from .metrics import DEFAULT_PLANES


def _central(
    vol: np.ndarray, axis: int, superior_axis: int | None, anterior_axis: int | None = None
) -> np.ndarray:
    """Central slice along ``axis``, oriented so the superior direction points up when it is in-plane, and
    the anterior direction points up on axial slices (the slices along ``superior_axis``) when given."""
    img = np.take(vol, vol.shape[axis] // 2, axis=axis)
    up = anterior_axis if axis == superior_axis else superior_axis
    if up is None or up == axis:
        return img
    remaining = [a for a in range(vol.ndim) if a != axis]
    if remaining.index(up) == 1:
        img = img.T
    return img[::-1]


def save_montage(
    path: str | os.PathLike,
    volumes: Mapping[str, torch.Tensor | np.ndarray],
    reference: str | None = None,
    planes: Mapping[str, int] | None = None,
    titles: Mapping[str, str] | None = None,
    error_scale: float = 0.25,
    superior_axis: int | None = 0,
    anterior_axis: int | None = None,
    overwrite: bool = False,
) -> None:
    """Save a PNG grid: one row per volume, columns = central slice of each plane (+ |error| maps).

    Args:
        path: output ``.png`` (written atomically).
        volumes: name → 3-D volume; all the same shape. Rows appear in this order.
        reference: name of the ground-truth volume; when given, each other row also shows
            |volume − reference| per plane (shared colour scale 0 … ``error_scale``·range).
        planes: plane name → axis (default axial 0, coronal 1, sagittal 2).
        titles: optional row labels (e.g. with PSNR), name → text.
        superior_axis: array axis whose increasing index points superior (head-wards); coronal and
            sagittal panels are oriented with it pointing up. ``None`` shows slices as stored.
        anterior_axis: array axis whose increasing index points anterior; axial panels are oriented
            with it pointing up (RAS volumes: ``superior_axis=2, anterior_axis=1``). ``None``: as stored.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planes = dict(DEFAULT_PLANES if planes is None else planes)
    arrays = {k: (v.detach().cpu().float().numpy() if isinstance(v, torch.Tensor)
                  else np.asarray(v, np.float32))
              for k, v in volumes.items()}
    ref = arrays.get(reference) if reference else None
    lo = float(ref.min()) if ref is not None else min(float(a.min()) for a in arrays.values())
    hi = float(ref.max()) if ref is not None else max(float(a.max()) for a in arrays.values())
    n_cols = len(planes) * (2 if ref is not None else 1)
    fig, axes = plt.subplots(len(arrays), n_cols, figsize=(1.9 * n_cols, 1.9 * len(arrays) + 0.3),
                             squeeze=False)
    for r, (name, vol) in enumerate(arrays.items()):
        for c, (plane, axis) in enumerate(planes.items()):
            img = _central(vol, axis, superior_axis, anterior_axis)
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if r == 0:
                ax.set_title(plane, fontsize=9)
            if c == 0:
                ax.set_ylabel((titles or {}).get(name, name), fontsize=8)
            if ref is not None:
                ax_e = axes[r, len(planes) + c]
                if name != reference:
                    err = np.abs(img - _central(ref, axis, superior_axis, anterior_axis))
                    ax_e.imshow(err, cmap="inferno", vmin=0, vmax=error_scale * (hi - lo),
                                interpolation="nearest")
                if r == 0:
                    ax_e.set_title(f"|error| {plane}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    fig.tight_layout()
    with atomic_path(path, overwrite, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
