r"""Framing: the linear map F from a slice prior's frame to a volume's voxel grid.

A 2-D slice prior was trained on images of one size (``H_p × W_p``), cut from head volumes framed one way
(cropped to the head, padded, resampled; in one orientation). A volume whose slices are another size or in
another orientation is reconstructed **in the prior's frame**: the solver's unknown is a volume
:math:`x_p` of shape ``(S, H_p, W_p)`` (the volume's own S slices, in its own order, each an image the
prior knows) and the measurements see it through :math:`A \circ F`, where

.. math::

    (F x_p)[\ldots] = \Pi\big(W_r\, x_p[s]\, W_c^\top\big),
    \qquad W_r \in \mathbb R^{n_r \times H_p},\ W_c \in \mathbb R^{n_c \times W_p},

* :math:`W_r, W_c` resize along the prior's rows and columns: file voxel ``i`` of the row axis lies at prior
  coordinate :math:`a(i) = (H_p - 1)/2 \pm (i - c_r)/s_r` (``c_r`` the frame's centre in file voxels,
  ``s_r`` file voxels per prior pixel, ``−`` when the axis is flipped) and takes the triangle-kernel
  (linear) interpolation of the prior image there; when ``s < 1`` (the file coarser than the prior) the
  kernel is widened to ``1/s`` prior pixels (area-like averaging, no aliasing). Prior pixels beyond the
  frame are zero (padding); file voxels outside it are 0;
* :math:`\Pi` puts the slice axis and the two in-plane axes where the volume has them (a permutation,
  possibly exchanging rows and columns).

F is a dense separable matrix product, so its adjoint :math:`F^\top y = W_r^\top\, \Pi^{-1}(y)\, W_c` is exact
and autograd through ``forward`` gives it. Units: voxel coordinates; the frame's millimetre size lives
in :class:`Framing` (``step`` × the file's voxel size).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputDataError
from .base import LinearOperator

Tensor = torch.Tensor

#: names of the RAS world axes, for messages.
WORLD_AXES = ("L-R", "A-P", "S-I")


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where the prior's frame ``(S, H_p, W_p)`` lies in a volume's voxel grid ``volume_shape``.

    Prior row ``a`` lies along volume axis ``row_axis`` at voxel coordinate
    ``centre[0] + σ·(a − (H_p − 1)/2)·step[0]`` with σ = −1 when ``flip[0]`` else +1; columns likewise
    along ``col_axis`` with ``centre[1]``, ``step[1]``, ``flip[1]``. The slice axis is not resampled.

    Attributes:
        volume_shape: the volume's shape (3 axes, the operator-domain layout).
        slice_axis: the volume axis holding the slices (0, 1, 2).
        prior_shape: ``(H_p, W_p)``.
        row_axis: the volume axis the prior's rows run along (one of the two in-plane axes).
        col_axis: the volume axis its columns run along (the other; ``row_axis > col_axis`` exchanges rows
            and columns).
        centre: voxel coordinates of the frame's centre along ``row_axis`` and ``col_axis``.
        step: volume voxels per prior pixel along ``row_axis`` and ``col_axis``.
        flip: whether the prior's rows / columns run against the volume axis.
    """

    volume_shape: tuple[int, int, int]
    slice_axis: int
    prior_shape: tuple[int, int]
    row_axis: int
    col_axis: int
    centre: tuple[float, float]
    step: tuple[float, float]
    flip: tuple[bool, bool] = (False, False)

    def __post_init__(self):
        shape = tuple(int(n) for n in self.volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputDataError(f"Framing: expected a 3-D volume shape, found {self.volume_shape}")
        axes = sorted((int(self.slice_axis), int(self.row_axis), int(self.col_axis)))
        if axes != [0, 1, 2]:
            raise InputDataError(f"Framing: slice, row and column axes must be 0, 1, 2 in some order, found "
                                 f"{self.slice_axis}, {self.row_axis}, {self.col_axis}")
        if len(self.prior_shape) != 2 or min(self.prior_shape) < 1:
            raise InputDataError(f"Framing: expected a 2-D prior shape, found {self.prior_shape}")
        if not all(math.isfinite(s) and s > 0 for s in self.step):
            raise InputDataError(f"Framing: expected steps > 0 (voxels per prior pixel), found {self.step}")
        if not all(math.isfinite(c) for c in self.centre):
            raise InputDataError(f"Framing: expected a finite centre, found {self.centre}")

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def reorient(cls, volume_shape, slice_axis: int, row_axis: int, col_axis: int,
                 flip: tuple[bool, bool] = (False, False)) -> Framing:
        """A pure axis permutation/flip: the prior's frame is the volume's plane itself (step 1, centred)."""
        shape = tuple(int(n) for n in volume_shape)
        return cls(shape, slice_axis, (shape[row_axis], shape[col_axis]), row_axis, col_axis,
                   ((shape[row_axis] - 1) / 2.0, (shape[col_axis] - 1) / 2.0), (1.0, 1.0),
                   (bool(flip[0]), bool(flip[1])))

    @classmethod
    def from_box(cls, volume_shape, slice_axis: int, prior_shape, box, spacing, margin_mm: float = 4.0,
                 row_axis: int | None = None, col_axis: int | None = None,
                 flip: tuple[bool, bool] = (False, False), fit_field: bool = True) -> Framing:
        """The head-box framing the training data had: the box padded by ``margin_mm`` on each side of its
        longer extent, made square in millimetres (the prior's pixels are square) and centred on the box.

        With ``fit_field`` (default) the frame is never larger than needed to cover the volume's plane (a
        head that fills its field is taken as framed already: the frame is then the field, centred), and a
        frame smaller than the field is shifted, when the box centre would put it partly outside, to lie
        inside it.

        Args:
            volume_shape: the volume's shape.
            slice_axis: its slice axis.
            prior_shape: ``(H_p, W_p)``.
            box: ``{axis: (lo, hi)}`` voxel index ranges (``hi`` exclusive) of the head along the two in-plane
                axes (e.g. from :func:`~diffrecon.datasets.framing.head_bbox` of a rough reconstruction).
            spacing: voxel size in mm of each of the three volume axes.
            margin_mm: space added beyond the head on each side of its longer in-plane extent.
            row_axis: the volume axis of the prior's rows (default: the first in-plane axis).
            col_axis: the volume axis of the prior's columns (default: the second in-plane axis).
            flip: see :class:`Framing`.
            fit_field: keep the frame no larger than the field and inside it (above).
        """
        shape = tuple(int(n) for n in volume_shape)
        plane = [a for a in range(3) if a != slice_axis % 3]
        r = plane[0] if row_axis is None else int(row_axis)
        c = plane[1] if col_axis is None else int(col_axis)
        sp = [float(s) for s in spacing]
        if not all(math.isfinite(s) and s > 0 for s in sp):
            raise InputDataError(f"Framing.from_box: expected voxel sizes > 0 mm, found {tuple(spacing)}")
        (lr, hr), (lc, hc) = (tuple(float(v) for v in box[r]), tuple(float(v) for v in box[c]))
        if not (hr > lr and hc > lc):
            raise InputDataError(f"Framing.from_box: empty head box {dict(box)}")
        hp, wp = (int(n) for n in prior_shape)
        pixel_mm = max(((hr - lr) * sp[r] + 2 * margin_mm) / hp, ((hc - lc) * sp[c] + 2 * margin_mm) / wp)
        centre = [(lr + hr - 1) / 2.0, (lc + hc - 1) / 2.0]
        if fit_field:
            pixel_mm = min(pixel_mm, max(shape[r] * sp[r] / hp, shape[c] * sp[c] / wp))
            for j, (axis, n_prior) in enumerate(((r, hp), (c, wp))):
                half = n_prior * pixel_mm / sp[axis] / 2.0  # half the frame, in voxels
                n = shape[axis]
                centre[j] = (n - 1) / 2.0 if 2 * half >= n - 1e-9 else min(max(centre[j], half - 0.5),
                                                                            n - 0.5 - half)
        return cls(shape, slice_axis % 3, (hp, wp), r, c, (centre[0], centre[1]),
                   (pixel_mm / sp[r], pixel_mm / sp[c]), (bool(flip[0]), bool(flip[1])))

    # -- properties -------------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return int(self.volume_shape[self.slice_axis])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """The prior's frame ``(S, H_p, W_p)``."""
        return (self.n_slices, int(self.prior_shape[0]), int(self.prior_shape[1]))

    @property
    def resized(self) -> bool:
        """Whether the plane is resampled (not a pure permutation/flip)."""
        n_r, n_c = self.volume_shape[self.row_axis], self.volume_shape[self.col_axis]
        return not (tuple(self.prior_shape) == (n_r, n_c) and self.step == (1.0, 1.0)
                    and self.centre == ((n_r - 1) / 2.0, (n_c - 1) / 2.0))

    @property
    def transposed(self) -> bool:
        return self.row_axis > self.col_axis

    @property
    def is_identity(self) -> bool:
        return not (self.resized or self.transposed or any(self.flip))

    def weights(self, which: int) -> Tensor:
        """The float64 resize matrix ``(n_volume, n_prior)`` of the rows (``which=0``) or columns (1)."""
        axis = self.row_axis if which == 0 else self.col_axis
        return resize_matrix(self.volume_shape[axis], self.prior_shape[which], self.centre[which],
                             self.step[which], self.flip[which])

    def operator(self) -> FramingOperator:
        return FramingOperator(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def resize_matrix(n_out: int, n_in: int, centre: float, step: float, flip: bool = False) -> Tensor:
    """Linear-interpolation weights ``(n_out, n_in)`` of a 1-D resize with zero padding.

    Output sample ``i`` lies at input coordinate ``a(i) = (n_in − 1)/2 ± (i − centre)/step`` (``−`` when
    ``flip``) and gets Σ_a k(a − a(i)) x[a] with the triangle kernel k(d) = max(0, 1 − |d|/h)/h of
    half-width h = max(1, 1/step) input samples, normalised by its sum over the infinite lattice (so a
    constant input is kept where the kernel sees only input samples, and tapers to 0 beyond them).
    At step 1, a centred frame and no flip the matrix is the identity; flipped, the exchange matrix.
    """
    h = max(1.0, 1.0 / float(step))
    k = int(math.ceil(h)) + 1
    i = np.arange(n_out, dtype=np.float64)
    sign = -1.0 if flip else 1.0
    a = (n_in - 1) / 2.0 + sign * (i - float(centre)) / float(step)
    lattice = np.arange(-k + math.floor(a.min()), math.ceil(a.max()) + k + 1, dtype=np.float64)
    w = np.clip(1.0 - np.abs(lattice[None, :] - a[:, None]) / h, 0.0, None) / h
    total = w.sum(1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    inside = (lattice >= 0) & (lattice <= n_in - 1)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    m[:, lattice[inside].astype(np.int64)] = w[:, inside]
    return torch.from_numpy(m)


class FramingOperator(LinearOperator):
    r"""F: the prior's frame ``(S, H_p, W_p)`` → the volume ``volume_shape`` (see the module docstring).

    ``forward(x_p) = Π(W_r x_p W_cᵀ)`` and ``adjoint(y) = W_rᵀ Π⁻¹(y) W_c`` with the float64 resize
    matrices of a :class:`Framing` (cast to the input's dtype); leading batch dimensions pass through,
    float32, float64 and complex inputs are accepted, and autograd through ``forward`` is the adjoint.

    Example:
        >>> import torch
        >>> from diffrecon.operators import Framing, FramingOperator
        >>> f = Framing((128, 128, 4), slice_axis=2, prior_shape=(64, 64), row_axis=0, col_axis=1,
        ...             centre=(63.5, 63.5), step=(2.0, 2.0), flip=(False, True))
        >>> F = FramingOperator(f)
        >>> F.in_shape, F.out_shape
        ((4, 64, 64), (128, 128, 4))
        >>> F(torch.ones(4, 64, 64))[2:-2, 2:-2].min().item()
        1.0
    """

    def __init__(self, framing: Framing):
        super().__init__(framing.in_shape, tuple(int(n) for n in framing.volume_shape))
        self.framing = framing
        self.register_buffer("w_rows", framing.weights(0))
        self.register_buffer("w_cols", framing.weights(1))
        # trailing axis j of (slice, row, col) is volume axis order[j]
        self.order = (framing.slice_axis, framing.row_axis, framing.col_axis)

    def _mats(self, t: Tensor) -> tuple[Tensor, Tensor]:
        dtype = t.dtype if t.is_complex() or t.is_floating_point() else torch.float32
        return self.w_rows.to(dtype), self.w_cols.to(dtype)

    def _forward(self, x: Tensor) -> Tensor:
        wr, wc = self._mats(x)
        t = wr @ x @ wc.transpose(0, 1)  # (..., S, n_r, n_c)
        lead = t.ndim - 3
        return t.permute(*range(lead), *(lead + self.order.index(k) for k in range(3)))

    def _adjoint(self, y: Tensor) -> Tensor:
        wr, wc = self._mats(y)
        lead = y.ndim - 3
        t = y.permute(*range(lead), *(lead + self.order[j] for j in range(3)))
        return wr.transpose(0, 1) @ t @ wc

    def extra_repr(self) -> str:
        f = self.framing
        return (f"in_shape={self.in_shape}, out_shape={self.out_shape}, rows=axis {f.row_axis}, "
                f"cols=axis {f.col_axis}, step=({f.step[0]:.3g}, {f.step[1]:.3g}), flip={f.flip}")


def plane_orientation(affine, slice_axis: int, axcodes: str = "RAS") -> tuple[int, int, tuple[bool, bool]]:
    """The volume axes of a prior's rows and columns, and their flips, for slices along ``slice_axis`` of
    a volume with voxel→world ``affine`` (4 × 4), given the prior's training orientation ``axcodes``.

    The prior was trained on slices of volumes stored in ``axcodes`` (nibabel's convention: ``"RAS"`` = array
    axes running towards Right, Anterior, Superior), each slice an image whose rows and columns are that
    array's two remaining axes in their order. The volume's in-plane axes are matched to those world axes
    by :func:`nibabel.orientations.io_orientation` (the closest axis for an oblique affine): rows are the
    one the prior's array has first, and an axis is flipped when it runs against the prior's direction.

    Returns:
        ``(row_axis, col_axis, (flip_rows, flip_cols))``; ``(a, b, (False, False))`` with ``a < b`` the two
        in-plane axes when the volume is already in the prior's orientation.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    try:
        prior = nib.orientations.axcodes2ornt(tuple(axcodes))
    except Exception as exc:  # noqa: BLE001 - nibabel raises ValueError or KeyError for bad codes
        raise InputDataError(f"orientation axcodes {axcodes!r}: expected three letters such as "
                             "'RAS'") from exc
    # prior array axis and direction of each world axis
    where = {int(w): (p, float(s)) for p, (w, s) in enumerate(prior)}
    plane = [a for a in range(3) if a != slice_axis % 3]
    info = []
    for a in plane:
        w, s = int(ornt[a][0]), float(ornt[a][1])
        p, ps = where[w]
        info.append((p, a, s != ps))
    info.sort()
    (_, r, fr), (_, c, fc) = info
    return r, c, (bool(fr), bool(fc))


def describe_orientation(affine, framing: Framing) -> str:
    """Words for the orientation part of a framing: ``"flipped A-P"``, ``"swapped rows and columns"``."""
    import nibabel as nib

    parts = []
    if framing.transposed:
        parts.append("swapped rows and columns")
    ornt = None if affine is None else nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    for axis, flipped in ((framing.row_axis, framing.flip[0]), (framing.col_axis, framing.flip[1])):
        if flipped:
            name = WORLD_AXES[int(ornt[axis][0])] if ornt is not None else f"axis {axis}"
            parts.append(f"flipped {name}")
    return ", ".join(parts)


def voxel_sizes(affine) -> tuple[float, float, float]:
    """Voxel sizes (mm) of the three array axes of a 4 × 4 affine (column norms)."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a**2).sum(0)))


def slice_first_affine(affine, slice_axis: int) -> np.ndarray:
    """The affine of a volume stored slice-first (``movedim(slice_axis, 0)``) given the stored one's."""
    order: Sequence[int] = [slice_axis % 3, *(a for a in range(3) if a != slice_axis % 3)]
    a = np.asarray(affine, dtype=np.float64)
    out = a.copy()
    out[:, :3] = a[:, list(order)]
    return out
