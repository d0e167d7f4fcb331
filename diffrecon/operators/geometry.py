"""CT acquisition geometries: plain data with explicit conventions, validated on construction.

Conventions (identical to ASTRA's ``parallel`` / ``fanflat`` / ``cone`` geometries, so a diffrecon
sinogram and an ASTRA sinogram of the same image agree without flips or shifts; checked against
astra-toolbox 2.5's ``parallel``→``parallel_vec`` and ``fanflat``→``fanflat_vec`` conversions and
by ``tests/test_ct_projectors.py``):

* **Units.** Lengths are in pixel (voxel) units: one image pixel is 1 × 1. Angles are in radians.
* **Image axes.** A 2D image is an array ``(H, W)`` = (rows, columns). Its centre is the origin;
  the x axis runs along columns (column j at x = j − (W − 1)/2) and the y axis runs *up* the rows
  (row i at y = (H − 1)/2 − i).
* **Volumes.** A 3D volume is an array ``(D, H, W)`` = (slices z, rows y, columns x); z increases
  with the slice index (slice k at z = k − (D − 1)/2). For a stack of 2D slices reconstructed
  slice by slice, axis 0 is the slice axis.
* **Parallel beam** at angle θ: rays run along (sin θ, −cos θ); detector bin j sits at signed
  offset u_j = (j − (n − 1)/2)·s along (cos θ, sin θ).
* **Fan beam** at angle θ: the source is at S·(sin θ, −cos θ), the (flat) detector centre at
  −D·(sin θ, −cos θ), bin j at that centre + u_j·(cos θ, sin θ); u_j and the spacing are measured
  on the detector (so at the rotation centre a bin is s·S/(S + D) wide). Ray (a, j) is the whole
  line through the source and bin j.
* **Cone beam** (circular orbit about z): source S·(sin θ, −cos θ, 0), flat detector centred at
  −D·(sin θ, −cos θ, 0) with column direction (cos θ, sin θ, 0)·s_col and row direction
  (0, 0, 1)·s_row; projections are arrays ``(n_angles, det_rows, det_cols)``.

``to_dict``/``from_dict`` give the JSON form stored beside sinograms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GeometryError


def _angles(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        a = np.asarray(angles, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise GeometryError(
            f"angles: expected a 1-D sequence of numbers (radians), found {angles!r}"
        ) from exc
    if a.size == 0:
        raise GeometryError("angles: expected at least one view, found zero")
    if not np.isfinite(a).all():
        raise GeometryError(
            f"angles: expected finite values (radians), found {a[~np.isfinite(a)][:5].tolist()}"
        )
    return a


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not float(v).is_integer() or int(v) <= 0:
        raise GeometryError(f"{name}: expected a positive integer, found {v!r}")
    return int(v)


def _positive_float(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{name}: expected a positive number, found {v!r}") from exc
    if not math.isfinite(f) or f <= 0:
        raise GeometryError(f"{name}: expected a positive finite number, found {v!r}")
    return f


def _shape(name: str, shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    try:
        t = tuple(shape)
    except TypeError as exc:
        raise GeometryError(f"{name}: expected {ndim} positive integers, found {shape!r}") from exc
    if len(t) != ndim:
        raise GeometryError(f"{name}: expected {ndim} positive integers, found {shape!r}")
    return tuple(_positive_int(name, s) for s in t)


def default_n_detectors(image_shape: Sequence[int], detector_spacing: float = 1.0) -> int:
    """Bins that cover the image diagonal: ceil(√(H² + W²) / spacing)."""
    h, w = image_shape[-2], image_shape[-1]
    return int(math.ceil(math.hypot(h, w) / detector_spacing))


class _ValueEquality:
    """Equality and hashing by value (the ``to_dict`` form), so geometries holding numpy angle arrays
    compare with ``==`` and can key dictionaries."""

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        d = self.to_dict()
        return hash(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(d.items())))


@dataclass(frozen=True, eq=False)
class ParallelGeometry(_ValueEquality):
    """2D parallel beam. ``angles`` in radians, ``detector_spacing`` in pixels."""

    image_shape: tuple[int, int]
    angles: np.ndarray = field(repr=False)
    n_detectors: int
    detector_spacing: float = 1.0
    kind: str = field(default="parallel", init=False)

    def __post_init__(self):
        object.__setattr__(self, "image_shape", _shape("image_shape", self.image_shape, 2))
        object.__setattr__(self, "angles", _angles(self.angles))
        object.__setattr__(self, "n_detectors", _positive_int("n_detectors", self.n_detectors))
        object.__setattr__(
            self, "detector_spacing", _positive_float("detector_spacing", self.detector_spacing)
        )

    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.n_angles, self.n_detectors)

    def detector_offsets(self) -> np.ndarray:
        """Signed bin-centre offsets u_j = (j − (n − 1)/2)·spacing, shape (n_detectors,)."""
        return (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2.0) * self.detector_spacing

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "angles": self.angles.tolist(),
            "n_detectors": self.n_detectors,
            "detector_spacing": self.detector_spacing,
        }


@dataclass(frozen=True, eq=False)
class FanGeometry(_ValueEquality):
    """2D fan beam with a flat detector; distances from the rotation centre, in pixels."""

    image_shape: tuple[int, int]
    angles: np.ndarray = field(repr=False)
    source_distance: float
    detector_distance: float
    n_detectors: int
    detector_spacing: float = 1.0
    kind: str = field(default="fan", init=False)

    def __post_init__(self):
        object.__setattr__(self, "image_shape", _shape("image_shape", self.image_shape, 2))
        object.__setattr__(self, "angles", _angles(self.angles))
        object.__setattr__(self, "source_distance", _positive_float("source_distance", self.source_distance))
        object.__setattr__(
            self, "detector_distance", _positive_float("detector_distance", self.detector_distance)
        )
        object.__setattr__(self, "n_detectors", _positive_int("n_detectors", self.n_detectors))
        object.__setattr__(
            self, "detector_spacing", _positive_float("detector_spacing", self.detector_spacing)
        )
        radius = 0.5 * math.hypot(*self.image_shape)
        if self.source_distance <= radius:
            raise GeometryError(
                f"source_distance: expected the source outside the image circle (> {radius:.1f} px), "
                f"found {self.source_distance}"
            )

    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.n_angles, self.n_detectors)

    def detector_offsets(self) -> np.ndarray:
        return (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2.0) * self.detector_spacing

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_shape": list(self.image_shape),
            "angles": self.angles.tolist(),
            "source_distance": self.source_distance,
            "detector_distance": self.detector_distance,
            "n_detectors": self.n_detectors,
            "detector_spacing": self.detector_spacing,
        }


@dataclass(frozen=True, eq=False)
class ConeGeometry(_ValueEquality):
    """3D cone beam on a circular orbit about the z axis, flat detector ``(rows, cols)``."""

    volume_shape: tuple[int, int, int]
    angles: np.ndarray = field(repr=False)
    source_distance: float
    detector_distance: float
    detector_shape: tuple[int, int]
    detector_spacing: tuple[float, float] = (1.0, 1.0)
    kind: str = field(default="cone", init=False)

    def __post_init__(self):
        object.__setattr__(self, "volume_shape", _shape("volume_shape", self.volume_shape, 3))
        object.__setattr__(self, "angles", _angles(self.angles))
        object.__setattr__(self, "source_distance", _positive_float("source_distance", self.source_distance))
        object.__setattr__(
            self, "detector_distance", _positive_float("detector_distance", self.detector_distance)
        )
        object.__setattr__(self, "detector_shape", _shape("detector_shape", self.detector_shape, 2))
        sp = self.detector_spacing
        if isinstance(sp, (int, float)):
            sp = (sp, sp)
        if len(tuple(sp)) != 2:
            raise GeometryError(
                f"detector_spacing: expected (row, col) spacings, found {self.detector_spacing!r}"
            )
        object.__setattr__(
            self, "detector_spacing", tuple(_positive_float("detector_spacing", s) for s in sp)
        )
        radius = 0.5 * math.hypot(self.volume_shape[1], self.volume_shape[2])
        if self.source_distance <= radius:
            raise GeometryError(
                f"source_distance: expected the source outside the volume's bounding circle (> {radius:.1f} "
                f"voxels), found {self.source_distance}"
            )

    @property
    def n_angles(self) -> int:
        return int(self.angles.size)

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        return (self.n_angles, *self.detector_shape)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "volume_shape": list(self.volume_shape),
            "angles": self.angles.tolist(),
            "source_distance": self.source_distance,
            "detector_distance": self.detector_distance,
            "detector_shape": list(self.detector_shape),
            "detector_spacing": list(self.detector_spacing),
        }


_KINDS = {"parallel": ParallelGeometry, "fan": FanGeometry, "cone": ConeGeometry}


def geometry_from_dict(d: dict) -> ParallelGeometry | FanGeometry | ConeGeometry:
    """Inverse of ``to_dict``; raises :class:`GeometryError` on unknown kinds or fields."""
    if not isinstance(d, dict) or d.get("kind") not in _KINDS:
        found = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise GeometryError(f"geometry: expected 'kind' in {sorted(_KINDS)}, found {found!r}")
    fields = {k: v for k, v in d.items() if k != "kind"}
    try:
        return _KINDS[d["kind"]](**fields)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"geometry of kind {d['kind']!r}: bad or missing fields ({exc})") from exc


def sparse_angles(n_views: int) -> np.ndarray:
    """``n_views`` angles uniform over [0, π), radians (DiffusionMBIR's sparse-view sets)."""
    n = _positive_int("n_views", n_views)
    return np.arange(n, dtype=np.float64) * (math.pi / n)


def limited_angles(wedge_degrees: float, step_degrees: float = 1.0) -> np.ndarray:
    """Angles 0, step, … below ``wedge_degrees`` (limited-angle CT), returned in radians.

    ``limited_angles(90)`` gives 0°, 1°, …, 89° (90 views), the DiffusionMBIR LA-CT setting.
    """
    wedge = _positive_float("wedge_degrees", wedge_degrees)
    step = _positive_float("step_degrees", step_degrees)
    n = int(math.ceil(wedge / step - 1e-9))
    return np.deg2rad(np.arange(n, dtype=np.float64) * step)
