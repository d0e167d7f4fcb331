"""Figures people would rather look at than read: orthogonal-plane montages with error maps.

A montage shows one slice per anatomical plane of each volume, with pixels drawn to scale (a voxel of
``sx × sy × sz`` mm is a ``sx × sy`` mm rectangle on an axial panel, so a thin slab looks thin), a
colour bar labelled with the value range, and, when a reference volume is given, ``|volume − reference|``
maps. Given the voxel-to-world ``affine``, the volumes are first reordered into RAS axis order (nibabel's
closest canonical orientation), so the panels are in the usual display orientation whatever the storage
order: axial with anterior up, coronal and sagittal with superior up, the subject's right on the
viewer's right on axial and coronal panels (neurological convention), anterior on the right on sagittal
panels; each panel edge is labelled with its direction (``R``/``L``, ``A``/``P``, ``S``/``I``).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .errors import InputDataError
from .io.atomic import atomic_path, check_writable
from .metrics import DEFAULT_PLANES

# Plane → array axis of a RAS-ordered volume (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior).
RAS_PLANES: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
# Edge labels of RAS panels (left, right, top, bottom) as drawn by :func:`_panel` with superior_axis=2,
# anterior_axis=1: columns run along the first remaining axis, rows are flipped so "up" is at the top.
_RAS_EDGES = {2: ("L", "R", "A", "P"), 1: ("L", "R", "S", "I"), 0: ("P", "A", "S", "I")}
PANEL_INCHES = 1.9  # the longest panel side


def _panel(
    vol: np.ndarray, axis: int, index: int, superior_axis: int | None, anterior_axis: int | None = None
) -> tuple[np.ndarray, int, int]:
    """Slice ``index`` along ``axis`` as an image ``(rows, cols)``, and the volume axes its rows and
    columns run along.

    The superior direction (increasing index of ``superior_axis``) points up when it lies in the plane;
    on the slices along ``superior_axis`` (axial) the anterior direction points up when ``anterior_axis``
    is given. Otherwise the slice is shown as stored (rows = the lower remaining axis).
    """
    img = np.take(vol, index, axis=axis)
    rows, cols = [a for a in range(vol.ndim) if a != axis]
    up = anterior_axis if axis == superior_axis else superior_axis
    if up is None or up == axis:
        return img, rows, cols
    if up == cols:
        img, rows, cols = img.T, cols, rows
    return img[::-1], rows, cols


def _central(
    vol: np.ndarray, axis: int, superior_axis: int | None, anterior_axis: int | None = None
) -> np.ndarray:
    """Central slice along ``axis``, oriented as :func:`_panel` does."""
    return _panel(vol, axis, vol.shape[axis] // 2, superior_axis, anterior_axis)[0]


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the column norms of the affine's 3×3 part."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape not in ((4, 4), (3, 4)):
        raise InputDataError(f"affine: expected a 4x4 voxel-to-mm matrix, found shape {a.shape}")
    return tuple(float(s) for s in np.linalg.norm(a[:3, :3], axis=0))


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    s = tuple(float(v) for v in spacing)
    if len(s) != 3 or not all(np.isfinite(v) and v > 0 for v in s):
        raise InputDataError(f"spacing: expected three finite voxel sizes > 0 (mm), found {tuple(spacing)}; "
                             "pass spacing=(sx, sy, sz) or a non-singular affine")
    return s


def _as_array(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        v = (v.abs() if v.is_complex() else v).float().numpy()
    a = np.asarray(v)
    a = np.abs(a) if np.iscomplexobj(a) else a
    return a.astype(np.float32, copy=False)


def _to_ras(
    arrays: dict[str, np.ndarray], affine: np.ndarray, planes: Mapping[str, int] | None,
    slices: Mapping[str, int] | None,
) -> tuple[dict[str, np.ndarray], tuple[float, float, float], dict[str, int], dict[str, int] | None]:
    """Reorder ``arrays`` into RAS axis order; map voxel spacing, plane axes and slice indices with them."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    if not np.isfinite(ornt).all():
        raise InputDataError("affine: singular, so the anatomical planes are unknown; pass a non-singular "
                             "affine, or spacing= and superior_axis=")
    shape = next(iter(arrays.values())).shape
    out_axis = [int(ornt[i, 0]) for i in range(3)]
    flipped = [ornt[i, 1] < 0 for i in range(3)]
    spacing = [0.0, 0.0, 0.0]
    for i, s in enumerate(spacing_from_affine(affine)):
        spacing[out_axis[i]] = s
    ras = {k: np.ascontiguousarray(nib.orientations.apply_orientation(v, ornt)) for k, v in arrays.items()}
    stored = (dict(planes) if planes is not None
              else {name: out_axis.index(ras_axis) for name, ras_axis in RAS_PLANES.items()})
    ras_planes = {name: out_axis[axis] if axis in (0, 1, 2) else axis for name, axis in stored.items()}
    ras_slices = None
    if slices is not None:
        ras_slices = {}
        for name, k in slices.items():
            if name not in stored:
                raise InputDataError(f"slices: no plane {name!r}; expected some of {list(stored)}")
            axis = stored[name]
            _check_index(name, k, shape[axis])
            ras_slices[name] = shape[axis] - 1 - int(k) if flipped[axis] else int(k)
    return ras, tuple(spacing), ras_planes, ras_slices


def _check_index(plane: str, k: int, n: int) -> None:
    if not 0 <= int(k) < n:
        raise InputDataError(f"slices: {plane} index {k} is outside 0..{n - 1}")


def montage_figure(
    volumes: Mapping[str, torch.Tensor | np.ndarray],
    reference: str | None = None,
    planes: Mapping[str, int] | None = None,
    titles: Mapping[str, str] | None = None,
    error_scale: float = 0.25,
    superior_axis: int | None = 0,
    anterior_axis: int | None = None,
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    slices: Mapping[str, int] | None = None,
    value_label: str = "intensity",
    title: str | None = None,
):
    """Build the montage figure (see :func:`save_montage` for the arguments).

    Returns a matplotlib ``Figure`` made without pyplot (nothing to close; ``fig.savefig`` writes it).
    Each panel image spans its physical size in mm (``AxesImage.get_extent()`` is
    ``(0, width_mm, height_mm, 0)``) on equal-aspect axes, so its drawn aspect ratio is the physical one.
    """
    from matplotlib.figure import Figure

    if not volumes:
        raise InputDataError("montage: expected at least one volume, found none")
    arrays = {k: _as_array(v) for k, v in volumes.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    if any(len(s) != 3 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise InputDataError(f"montage: expected 3-D volumes of one shape, found {shapes}")
    if reference is not None and reference not in arrays:
        raise InputDataError(f"montage: reference {reference!r} is not among the volumes {list(arrays)}")
    shape = next(iter(shapes.values()))
    edges = None
    if affine is not None:
        arrays, spacing, planes, slices = _to_ras(arrays, affine, planes, slices)
        superior_axis, anterior_axis = 2, 1
        shape = next(iter(arrays.values())).shape
        edges = _RAS_EDGES
    else:
        planes = dict(DEFAULT_PLANES if planes is None else planes)
    spacing = _check_spacing((1.0, 1.0, 1.0) if spacing is None else spacing)
    bad = {p: a for p, a in planes.items() if a not in (0, 1, 2)}
    if bad:
        raise InputDataError(f"planes: expected array axes 0, 1 or 2, found {bad}")
    unknown = sorted(set(slices or {}) - set(planes))
    if unknown:
        raise InputDataError(f"slices: no plane {unknown[0]!r}; expected some of {list(planes)}")
    index = {}
    for plane, axis in planes.items():
        k = shape[axis] // 2 if slices is None or plane not in slices else int(slices[plane])
        _check_index(plane, k, shape[axis])
        index[plane] = k
    ref = arrays.get(reference) if reference else None
    finite = [a[np.isfinite(a)] for a in ([ref] if ref is not None else arrays.values())]
    lo = min((float(f.min()) for f in finite if f.size), default=0.0)
    hi = max((float(f.max()) for f in finite if f.size), default=1.0)

    # panel geometry in mm: rows/cols of each plane's image and the voxel size along them
    geom = {}
    for plane, axis in planes.items():
        _, r, c = _panel(arrays[next(iter(arrays))], axis, index[plane], superior_axis, anterior_axis)
        geom[plane] = (shape[r] * spacing[r], shape[c] * spacing[c])  # (height, width) in mm
    longest = max(max(hw) for hw in geom.values())
    inch = PANEL_INCHES / longest
    widths = [geom[p][1] for p in planes]
    row_h = max(geom[p][0] for p in planes) * inch
    n_rows, n_groups = len(arrays), 2 if ref is not None else 1
    n_cols = len(planes) * n_groups
    # a bare Figure (no pyplot): no backend switch, no global figure list, safe in threads and notebooks
    fig = Figure(figsize=(n_groups * (sum(widths) * inch + 1.0) + 0.3, max(1.8, n_rows * row_h + 0.6)),
                 layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, gridspec_kw={"width_ratios": widths * n_groups})
    if title:
        fig.suptitle(title, fontsize=9)
    value_axes = axes[:, :len(planes)]
    err_axes = axes[:, len(planes):] if ref is not None else None
    im_value = im_err = None
    err_hi = error_scale * (hi - lo) if hi > lo else 1.0
    for r, (name, vol) in enumerate(arrays.items()):
        for c, (plane, axis) in enumerate(planes.items()):
            img, _, _ = _panel(vol, axis, index[plane], superior_axis, anterior_axis)
            h, w = geom[plane]
            ax = value_axes[r, c]
            im_value = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                                 extent=(0, w, h, 0), aspect="equal")
            if r == 0:
                ax.set_title(plane, fontsize=9)
                if edges is not None:
                    _edge_labels(ax, edges[axis])
            if c == 0:
                ax.set_ylabel((titles or {}).get(name, name), fontsize=8)
            if err_axes is not None:
                ax_e = err_axes[r, c]
                if name == reference:
                    ax_e.axis("off")
                else:
                    ref_img = _panel(ref, axis, index[plane], superior_axis, anterior_axis)[0]
                    im_err = ax_e.imshow(np.abs(img - ref_img), cmap="inferno", vmin=0, vmax=err_hi,
                                         interpolation="nearest", extent=(0, w, h, 0), aspect="equal")
                if r == 0:
                    ax_e.set_title(f"|error| {plane}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    cb = fig.colorbar(im_value, ax=value_axes.ravel().tolist(), shrink=0.9, aspect=25,
                      label=f"{value_label}\n{lo:.3g} to {hi:.3g}")
    cb.ax.tick_params(labelsize=7)
    cb.ax.yaxis.label.set_fontsize(8)
    if im_err is not None:
        cb_e = fig.colorbar(im_err, ax=err_axes.ravel().tolist(), shrink=0.9, aspect=25,
                            label=f"|{value_label} − {reference}|\n0 to {err_hi:.3g}")
        cb_e.ax.tick_params(labelsize=7)
        cb_e.ax.yaxis.label.set_fontsize(8)
    return fig


def _edge_labels(ax, letters: tuple[str, str, str, str]) -> None:
    """Direction letters at the left, right, top and bottom edges of a panel (axes coordinates)."""
    style = {"transform": ax.transAxes, "color": "yellow", "fontsize": 7, "fontweight": "bold"}
    left, right, top, bottom = letters
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


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
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    slices: Mapping[str, int] | None = None,
    value_label: str = "intensity",
    title: str | None = None,
    dpi: int = 110,
) -> pathlib.Path:
    """Save a PNG grid: one row per volume, one column per plane (+ |error| maps), drawn to scale.

    Args:
        path: output ``.png``, written atomically; an existing file is refused unless ``overwrite``.
        volumes: name → 3-D volume (real, or complex shown as magnitude); all the same shape. Rows appear
            in this order.
        reference: name of the ground-truth volume; when given, each other row also shows
            |volume − reference| per plane (shared colour scale 0 … ``error_scale``·range, own colour bar).
        planes: plane name → array axis the slices are taken along (default axial 0, coronal 1,
            sagittal 2; with ``affine``: the planes of the RAS reordering, and given axes are those of
            the stored array).
        titles: optional row labels (e.g. with PSNR), name → text.
        superior_axis: array axis whose increasing index points superior (head-wards); coronal and
            sagittal panels are oriented with it pointing up. ``None`` shows slices as stored. Ignored
            with ``affine``, which fixes the orientation.
        anterior_axis: array axis whose increasing index points anterior; axial panels are oriented
            with it pointing up (RAS volumes: ``superior_axis=2, anterior_axis=1``). ``None``: as stored.
        spacing: voxel size ``(s0, s1, s2)`` in mm along array axes 0, 1, 2 (default 1 mm each); a
            panel's pixels are ``s_row × s_col`` rectangles. With ``affine`` it is taken from the
            affine (``np.linalg.norm(affine[:3, :3], axis=0)``).
        affine: 4×4 voxel-to-world (RAS mm) matrix of the volumes (e.g. the NIfTI's); the volumes are
            reordered to RAS for display and the panel edges labelled with directions.
        slices: plane name → slice index along that plane's axis of the stored array (default: the
            central slice).
        value_label: what the values are, for the colour bar (its label adds the displayed range).
        title: figure title.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> vol = np.random.default_rng(0).random((16, 16, 4), dtype=np.float32)
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.png"
        >>> save_montage(out, {"recon": vol}, affine=np.diag([1.0, 1.0, 4.0, 1.0])).exists()
        True
    """
    check_writable(path, overwrite)  # before drawing: a refused path costs nothing
    fig = montage_figure(volumes, reference, planes, titles, error_scale, superior_axis, anterior_axis,
                         spacing=spacing, affine=affine, slices=slices, value_label=value_label,
                         title=title)
    with atomic_path(path, overwrite, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return pathlib.Path(path)
