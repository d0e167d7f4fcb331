"""Head framing shared by the bundled sample volume and the prior's training data.

Every head volume that meets a bundled prior goes through the same three steps, so the slice
statistics a prior is trained on match the slices it is evaluated on:

1. **crop** to the bounding box of the head (voxels brighter than ``threshold`` × the 99.9th
   intensity percentile, after a light smoothing so isolated noise does not widen the box);
2. **pad** the box symmetrically to a cube (in millimetres) with ``margin_mm`` on the longest side;
3. **resample** the cube to ``size``³ voxels (trilinear, with a Gaussian anti-alias filter of
   σ = 0.4·(output spacing / input spacing) input voxels), and scale intensities so the 99.9th
   percentile maps to 1, clipping to [0, 1].

With the 1 mm Colin27 head (≈ 180 × 217 × 181 mm) and ``size=64`` the output spacing is ≈ 3.5 mm.

**MONAI.** The box is read off the mask by MONAI's ``generate_spatial_bounding_box`` (what
``CropForeground`` uses) and the intensity map is MONAI's ``ScaleIntensityRange`` — both give exactly the
hand-written results they replaced (``tests/test_framing.py`` checks it on the sample volume). Three
things stay hand-written because MONAI's transforms would change the bundled sample volume and the
prior's training slices:

* the mask is smoothed (Gaussian σ = 1 voxel) and opened before the box is taken, which
  ``CropForeground``'s ``select_fn`` cannot express;
* the resampling centres the cube on the box to sub-voxel precision, sizes it in millimetres
  (``margin_mm``) and anti-aliases with σ = 0.4·step; ``CropForeground`` + ``ResizeWithPadOrCrop`` (or
  ``SpatialPad``) work in whole voxels, ``Spacing`` does not anti-alias and ``Resize(anti_aliasing=True)``
  uses σ = (step − 1)/2;
* ``ScaleIntensityRangePercentiles(0, 99.9, 0, 1, clip=True)`` maps the *minimum* to 0: identical only
  when the clipped volume holds a zero voxel, which the Rician-noise heads of
  :func:`~diffrecon.datasets.synth.synth_head` do not.

**Reconstruction.** The same conventions are recorded in a prior's JSON (``data.intensity``,
``data.orientation``, ``data.framing``; :func:`head_conventions`, :func:`nifti_conventions`) so a
reconstruction can frame a user's volume the way the prior's data were framed: :func:`plan_framing` picks
the frame (in-plane head box of a rough reconstruction by the same rule, :func:`plane_box`; orientation
from the affine), :func:`frame_problem` turns ``y = A x`` into ``y = A F x_p`` with the linear framing
operator F of :mod:`diffrecon.operators.framing` (hand-written: it needs an exact adjoint, which MONAI's
resampling transforms do not provide), and :func:`auto_image_scale` estimates the intensity scale.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage


def head_bbox(volume: np.ndarray, threshold: float = 0.08) -> tuple[slice, slice, slice]:
    """Bounding box (one slice per axis) of voxels above ``threshold`` × p99.9 of ``volume``."""
    v = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), 1.0)
    ref = float(np.percentile(v, 99.9))
    mask = v > threshold * max(ref, 1e-12)
    if not mask.any():
        return tuple(slice(0, n) for n in volume.shape)  # type: ignore[return-value]
    mask = ndimage.binary_opening(mask, iterations=1) if mask.sum() > 100 else mask
    from monai.transforms.utils import generate_spatial_bounding_box

    lo, hi = generate_spatial_bounding_box(mask[None], select_fn=lambda m: m > 0)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def plane_box(rough: np.ndarray, slice_axis: int, threshold: float = 0.08) -> dict[int, tuple[int, int]]:
    """The head's in-plane bounding box in a rough reconstruction (FBP, zero-filled) of a volume: ``{axis:
    (lo, hi)}`` for the two in-plane axes (``hi`` exclusive).

    The rule of :func:`head_bbox` applied slice by slice, so that a few slices suffice and streaks do not
    spread across them: each slice smoothed (Gaussian σ = 1 pixel), thresholded at ``threshold`` × the
    volume's p99.9, opened (3 × 3), and the union over slices boxed (MONAI ``generate_spatial_bounding_box``).
    A volume with no voxel above the threshold gives the whole plane.
    """
    from monai.transforms.utils import generate_spatial_bounding_box

    v = np.moveaxis(np.asarray(rough, dtype=np.float32), slice_axis, 0)
    v = ndimage.gaussian_filter(v, (0.0, 1.0, 1.0))
    mask = v > threshold * max(float(np.percentile(v, 99.9)), 1e-12)
    if mask.sum() > 100:
        mask = ndimage.binary_opening(mask, structure=np.ones((1, 3, 3), bool))
    plane = [a for a in range(3) if a != slice_axis % 3]
    if not mask.any():
        return {a: (0, int(np.asarray(rough).shape[a])) for a in plane}
    lo, hi = generate_spatial_bounding_box(mask.any(0)[None], select_fn=lambda m: m > 0)
    return {a: (int(lo[j]), int(hi[j])) for j, a in enumerate(plane)}


def measured_support(y, operator, level: float = 0.03):
    """Where the object can be, from CT measurements alone: the voxels that no ray with a near-zero
    measurement (``y ≤ level`` × max |y|) passes through, i.e. where ``Aᵀ 1[y ≤ level·max|y|] ≤ 0.5`` (less
    than half a voxel's interpolation weight of such a ray). The object's visual hull over the views; with
    views at 0° and 90° its bounding box is the object's. Streaks of a sparse-view FBP, which reach the
    edges of the field, vanish outside it. Returns a boolean tensor in the operator's volume layout.

    Needs an operator with non-negative weights (CT projectors); ``level`` should exceed the noise.
    """
    import torch

    empty = (y.abs() <= level * float(y.abs().max())).to(y.real.dtype if y.is_complex() else y.dtype)
    with torch.no_grad():
        seen = operator.adjoint(empty)
    return (seen.real if seen.is_complex() else seen) <= 0.5


def frame_head(
    volume: np.ndarray,
    affine: np.ndarray,
    size: int = 64,
    margin_mm: float = 4.0,
    threshold: float = 0.08,
    normalise: bool = True,
    bbox=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop, pad to a cube and resample a head volume to ``size``³ voxels.

    Args:
        volume: (X, Y, Z) array in RAS-like orientation with isotropic voxels (any dtype).
        affine: (4, 4) voxel→world (mm) affine of ``volume``; only diagonal (axis-aligned) affines
            are supported, which is what the bundled sources have.
        size: output edge length in voxels.
        margin_mm: extra space added around the longest head extent.
        threshold: head/background threshold as a fraction of the 99.9th percentile.
        normalise: scale so that the 99.9th percentile becomes 1 and clip to [0, 1].
        bbox: optional precomputed bounding box (tuple of three slices).

    Returns:
        ``(framed, new_affine)``: a float32 (size, size, size) array and the (4, 4) affine mapping its
        voxels to the same world coordinates as the input.
    """
    vol = np.asarray(volume, dtype=np.float32)
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        raise ValueError(f"frame_head expects isotropic voxels, got spacing {spacing}")
    sp = float(spacing[0])
    bb = head_bbox(vol, threshold) if bbox is None else bbox
    lo = np.array([s.start for s in bb], dtype=np.float64)
    hi = np.array([s.stop for s in bb], dtype=np.float64)
    centre = (lo + hi - 1) / 2.0  # voxel coordinates
    extent_mm = (hi - lo).max() * sp + 2 * margin_mm
    out_sp = extent_mm / size  # mm per output voxel
    step = out_sp / sp  # input voxels per output voxel
    if step > 1:
        vol = ndimage.gaussian_filter(vol, 0.4 * step)
    grid = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
    coords = np.stack(np.meshgrid(*(centre[i] + grid for i in range(3)), indexing="ij"))
    out = ndimage.map_coordinates(vol, coords.reshape(3, -1), order=1, mode="constant", cval=0.0)
    out = out.reshape(size, size, size).astype(np.float32)
    start = centre - (size - 1) / 2.0 * step
    new_aff = aff.copy()
    new_aff[:3, :3] = aff[:3, :3] * step
    new_aff[:3, 3] = aff[:3, :3] @ start + aff[:3, 3]
    if normalise:
        out = normalise_intensity(out)
    return out, new_aff


def normalise_intensity(x: np.ndarray, pct: float = 99.9) -> np.ndarray:
    """Scale so the ``pct`` percentile (of the volume clipped at 0) is 1, clip to [0, 1]; the background
    stays 0: x ↦ clip(x / p, 0, 1) (MONAI ``ScaleIntensityRange(0, p, 0, 1, clip=True)``)."""
    from monai.transforms import ScaleIntensityRange

    x = np.clip(x, 0, None)
    ref = max(float(np.percentile(x, pct)), 1e-12)
    out = ScaleIntensityRange(a_min=0.0, a_max=ref, b_min=0.0, b_max=1.0, clip=True)(x)
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------
# framing a user's volume for a prior (reconstruction): the same box rule, as a linear operator
DEFAULT_MARGIN_MM = 4.0
DEFAULT_THRESHOLD = 0.08


def head_conventions() -> dict:
    """The training conventions of the bundled head priors' data (slice banks of
    :mod:`diffrecon.datasets.bank`: framed heads of :mod:`~diffrecon.datasets.synth` and the MNI152
    templates), as recorded in their JSON ``data``: ``orientation``, ``intensity``, ``framing``."""
    return {
        "orientation": {
            "axcodes": "RAS",
            "slice_axes": [0, 1, 2],
            "plane": "each slice is an image whose rows and columns are the two remaining axes of the RAS "
                     "volume in order (axis 0: (A, S), axis 1: (R, S), axis 2: (R, A)), each running towards "
                     "R, A or S",
            "left_right_mirrored": "half of the synthetic heads (diffrecon.datasets.synth.synth_head)",
        },
        "intensity": {
            "normalisation": "p99.9 -> 1",
            "percentile": 99.9,
            "range": [0.0, 1.0],
            "clip": True,
            "description": "each head-framed volume clipped at 0, divided by its 99.9th percentile and "
                           "clipped to [0, 1] (diffrecon.datasets.framing.normalise_intensity)",
        },
        "framing": {
            "threshold": DEFAULT_THRESHOLD,
            "margin_mm": DEFAULT_MARGIN_MM,
            "training_margin_mm": [2.0, 26.0],
            "description": "head box (voxels above 0.08 x p99.9 after a 1-voxel Gaussian), padded by the "
                           "margin to a cube in mm and resampled to 64^3 (diffrecon.datasets.framing."
                           "frame_head); "
                           "margin 4 mm for the MNI152 templates and the sample volume, uniform in 2-26 mm "
                           "for the synthetic heads",
        },
    }


def nifti_conventions(axes=(0, 1, 2), percentiles=(0.0, 99.9)) -> dict:
    """The training conventions of slices made by :func:`~diffrecon.priors.train.slices_from_nifti` (MONAI:
    RAS, ``percentiles`` mapped to [0, 1] and clipped, foreground crop > 0.08 with a 2-voxel margin, padded
    to a cube, resized), as ``train-prior --data`` records them."""
    lo, hi = (float(p) for p in percentiles)
    return {
        "orientation": {
            "axcodes": "RAS",
            "slice_axes": [int(a) for a in axes],
            "plane": "each slice is an image whose rows and columns are the two remaining axes of the RAS "
                     "volume in order, each running towards R, A or S",
        },
        "intensity": {
            "normalisation": f"p{lo:g} -> 0, p{hi:g} -> 1",
            "percentile": hi,
            "lower_percentile": lo,
            "range": [0.0, 1.0],
            "clip": True,
            "description": "MONAI ScaleIntensityRangePercentiles on each RAS volume",
        },
        "framing": {
            "threshold": DEFAULT_THRESHOLD,
            "margin_voxels": 2,
            "description": "MONAI CropForeground (> 0.08 after scaling, margin 2 voxels), padded to a cube, "
                           "resized with anti-aliasing",
        },
    }


def prior_conventions(prior) -> dict:
    """The training conventions a prior records in its JSON: ``orientation`` (``data.orientation``, e.g.
    ``{"axcodes": "RAS", "slice_axes": [0, 1, 2]}``), ``intensity`` (``data.intensity``, e.g.
    ``{"normalisation": "p99.9 -> 1", "percentile": 99.9, "range": [0, 1]}``) and ``framing``
    (``data.framing``: ``threshold``, ``margin_mm``); each None when the prior does not record it."""
    cfg = getattr(prior, "config", None) or {}
    return {key: cfg.get(f"data_{key}") or None for key in ("orientation", "intensity", "framing")}


def intensity_percentile(prior) -> float | None:
    """The image percentile a prior's training data had at the top of its range (``data.intensity``
    ``percentile``), or None when the prior records no intensity normalisation."""
    intensity = prior_conventions(prior)["intensity"]
    if not intensity:
        return None
    return float(intensity.get("percentile", 99.9))


def _orientation_words(affine, volume_shape, slice_axis, r, c, flip) -> str:
    from ..operators.framing import Framing, describe_orientation

    return describe_orientation(affine, Framing.reorient(volume_shape, slice_axis, r, c, flip))


def plan_framing(prior, volume_shape, slice_axis: int, rough=None, affine=None, resample: str = "auto"):
    """How a volume's slices must be framed to meet ``prior``: a :class:`~diffrecon.operators.Framing`
    (or None when they already match) and the notes to show the user.

    * **orientation**: with an ``affine`` and a prior that records ``data.orientation``, the in-plane axes
      are permuted/flipped so each slice reaches the prior in its training orientation
      (:func:`~diffrecon.operators.framing.plane_orientation`; the slices keep their order);
    * **size**: slices of another size than the prior's are framed like its training data: the head box
      of ``rough`` (:func:`head_bbox`, the prior's ``data.framing`` threshold), padded by its
      ``margin_mm`` (default 4 mm) to a square in millimetres, resized to the prior's pixels.

    Args:
        prior: the prior (its ``image_shape`` and the conventions of :func:`prior_conventions`).
        volume_shape: the volume's shape (3 axes, the operator-domain layout).
        slice_axis: the volume axis holding the slices.
        rough: a rough reconstruction (FBP, zero-filled) in the volume's layout; needed to resize.
        affine: the volume's 4 × 4 voxel → mm affine (None: unit voxels, no reorientation).
        resample: ``"auto"``, or ``"off"`` (refuse slices of another size, never reorient).

    Raises:
        InputDataError: another slice size with ``resample="off"``, a bad ``resample``, or no ``rough``.
    """
    from ..errors import InputDataError
    from ..operators.framing import Framing, plane_orientation, voxel_sizes

    if resample not in ("auto", "off"):
        raise InputDataError(f"--resample: expected auto or off, found {resample!r}")
    ishape = getattr(prior, "image_shape", None)
    if ishape is None:
        return None, []
    shape = tuple(int(n) for n in volume_shape)
    axis = int(slice_axis) % 3
    plane_axes = [a for a in range(3) if a != axis]
    prior_plane = tuple(int(n) for n in ishape[-2:])
    conv = prior_conventions(prior)
    orient = conv["orientation"] or {}
    codes = str(orient.get("axcodes", "RAS"))
    r, c, flip = plane_axes[0], plane_axes[1], (False, False)
    notes: list[str] = []
    if affine is not None:
        got = plane_orientation(affine, axis, codes if orient else "RAS")
        as_stored = got == (plane_axes[0], plane_axes[1], (False, False))
        if orient:
            r, c, flip = got
            notes += _slice_axis_notes(affine, axis, orient)
        elif not as_stored:
            notes.append("note: the prior records no training orientation (data.orientation), so its slices "
                         f"reach it as stored ({_orientation_words(affine, shape, axis, *got)} from RAS)")
    plane = (shape[plane_axes[0]], shape[plane_axes[1]])
    reoriented = (r, c, flip) != (plane_axes[0], plane_axes[1], (False, False))
    if resample == "off":
        if plane != prior_plane:
            raise InputDataError(
                f"the prior was trained on {prior_plane[0]}x{prior_plane[1]} slices but the data's slices "
                f"are {plane[0]}x{plane[1]}; use --resample auto, resample the data or use a prior of that "
                "size")
        if reoriented:
            notes.append(f"note: --resample off: the slices reach the prior as stored (it was trained in "
                         f"{codes}: {_orientation_words(affine, shape, axis, r, c, flip)} would match it)")
        return None, notes
    words = _orientation_words(affine, shape, axis, r, c, flip) if reoriented else ""
    if (shape[r], shape[c]) == prior_plane:
        if not reoriented:
            return None, notes
        notes.append(f"warning: reoriented the slices to the prior's {codes} training orientation "
                     f"({words}); the result is written in the file's own orientation")
        return Framing.reorient(shape, axis, r, c, flip), notes
    if rough is None:
        raise InputDataError("framing the slices for the prior needs a rough reconstruction (FBP or "
                             "zero-filled) to find the head; pass rough=")
    rough = np.asarray(rough.detach().cpu().float().numpy() if hasattr(rough, "detach") else rough)
    if rough.shape != shape:
        raise InputDataError(f"plan_framing: rough image of shape {rough.shape}, expected the volume's "
                             f"{shape}")
    fr = conv["framing"] or {}
    spacing = voxel_sizes(affine) if affine is not None else (1.0, 1.0, 1.0)
    if "margin_mm" in fr:
        margin = float(fr["margin_mm"])
    elif "margin_voxels" in fr:
        margin = float(fr["margin_voxels"]) * max(spacing[r], spacing[c])
    else:
        margin = DEFAULT_MARGIN_MM
    box = plane_box(np.abs(rough) if np.iscomplexobj(rough) else rough, axis,
                    float(fr.get("threshold", DEFAULT_THRESHOLD)))
    framing = Framing.from_box(shape, axis, prior_plane, box, spacing, margin, r, c, flip)
    pixel_mm = framing.step[0] * spacing[r]
    unit = "mm" if affine is not None else "voxel"  # no affine: unit voxels
    zoom = 1.0 / math.sqrt(framing.step[0] * framing.step[1])
    orient_words = f"; {words} to the prior's {codes} orientation" if words else ""
    notes.append(
        f"warning: framed {plane[0]}x{plane[1]} slices to the prior's {prior_plane[0]}x{prior_plane[1]} "
        f"(head box {box[r][1] - box[r][0]}x{box[c][1] - box[c][0]} voxels padded to a "
        f"{pixel_mm * prior_plane[0]:.0f} {unit} square, resize x{zoom:.3g}{orient_words}); resolution is "
        f"limited by the prior's ({pixel_mm:.3g} {unit} pixels); the result is written on the file's grid"
    )
    return framing, notes


def _slice_axis_notes(affine, axis: int, orient: dict) -> list[str]:
    """A note when the prior was trained on slices along other axes than the data's slice axis."""
    import nibabel as nib

    from ..operators.framing import WORLD_AXES

    slice_axes = orient.get("slice_axes")
    if slice_axes is None:
        return []
    world = int(nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))[axis][0])
    prior = nib.orientations.axcodes2ornt(tuple(str(orient.get("axcodes", "RAS"))))
    p = next(i for i, (w, _) in enumerate(prior) if int(w) == world)
    if p in [int(a) for a in slice_axes]:
        return []
    return [f"note: the prior was trained on slices along its array axes {list(slice_axes)}, but the data's "
            f"slices are along {WORLD_AXES[world]} (its axis {p})"]


def auto_image_scale(rough, framing=None, percentile: float = 99.9) -> float:
    """The ``--image-scale auto`` estimate: the ``percentile`` of a rough reconstruction ``rough`` (volume
    layout); with a ``framing``, of the rough image brought into the prior's frame (the F-weighted average
    ``Fᵀ rough / Fᵀ 1`` over the prior pixels the field covers), i.e. at the prior's resolution and over the
    head box and its margin, where the training data's percentile was taken."""
    import torch

    v = rough.detach().abs().float()
    if framing is not None:
        F = framing.operator().to(v.device)
        weight = F.adjoint(torch.ones_like(v))
        inside = weight > 0.5 * float(weight.max())
        v = (F.adjoint(v) / weight.clamp_min(1e-12))[inside] if bool(inside.any()) else v
    v = v.flatten().cpu()
    return float(torch.quantile(v[:: max(1, v.numel() // 1_000_000)], percentile / 100.0))


@dataclasses.dataclass
class FramedProblem:
    """A reconstruction problem moved into a prior's frame (:func:`frame_problem`).

    Attributes:
        operator: ``w^½ · (A ∘ F)`` on the prior's frame ``(S, H_p, W_p)`` (``A`` itself when unframed).
        y: ``w^½ · y``.
        framing: the :class:`~diffrecon.operators.Framing` (None: the data already match the prior).
        data_weight: w = 1/s³ (CT) or 1/s² (MRI), s = file voxels per prior pixel (geometric mean): the
            data term ``w·½‖A F x − y‖²`` then has the size it would have with the measurements taken at the
            prior's resolution (CT line integrals in pixel units are s× longer over s× more detector bins;
            an orthonormal FFT sees s² × more pixels), so the solvers' λ, ρ keep their meaning.
        notes: what was done, one line each, for the user.
    """

    operator: object
    y: object
    framing: object | None = None
    data_weight: float = 1.0
    notes: list = dataclasses.field(default_factory=list)

    def to_volume(self, x_p):
        """``F x_p``: the solver's estimate on the file's voxel grid (``x_p`` itself when unframed)."""
        if self.framing is None:
            return x_p
        return self.framing.operator().to(x_p.device)(x_p)

    def to_dict(self) -> dict | None:
        if self.framing is None:
            return None
        return {**self.framing.to_dict(), "data_weight": self.data_weight}


def frame_problem(prior, y, operator, rough=None, affine=None, modality: str = "ct",
                  resample: str = "auto") -> FramedProblem:
    """Frame a problem ``y = A x`` for a 2-D slice prior (the Python side of ``reconstruct --resample``).

    Args:
        prior: the slice prior.
        y: measurements.
        operator: ``A`` on volumes (a ``SliceWise`` operator: its slice axis; others: slices on axis 0).
        rough: rough reconstruction in the operator's volume layout (needed when the slice size differs).
        affine: 4 × 4 voxel → mm affine of that volume layout (None: no reorientation, unit voxels).
        modality: ``"ct"`` or ``"mri"`` (the data weight's power, see :class:`FramedProblem`).
        resample: ``"auto"`` or ``"off"`` (:func:`plan_framing`).

    Example::

        >>> p = frame_problem(prior, y, A, rough=fbp_volume, affine=affine)   # doctest: +SKIP
        >>> x_p, record = DDS.default_ct(prior, n_views)(p.y, p.operator)     # doctest: +SKIP
        >>> x = p.to_volume(x_p)   # on the file's grid                          # doctest: +SKIP
    """
    from ..errors import InputDataError
    from ..operators import SliceWise

    in_shape = getattr(operator, "in_shape", None)
    if in_shape is None or len(in_shape) != 3:
        raise InputDataError(f"frame_problem: expected an operator on 3-D volumes, found in_shape {in_shape}")
    axis = operator.axis if isinstance(operator, SliceWise) else 0
    shape = tuple(int(y.shape[0]) if n == -1 else int(n) for n in in_shape)
    framing, notes = plan_framing(prior, shape, axis, rough, affine, resample)
    if framing is None:
        return FramedProblem(operator, y, None, 1.0, notes)
    s = math.sqrt(framing.step[0] * framing.step[1])
    weight = 1.0 / s ** (3 if modality == "ct" else 2)
    op = operator @ framing.operator().to(y.device)
    if weight != 1.0:
        op = op * math.sqrt(weight)
    return FramedProblem(op, y * math.sqrt(weight) if weight != 1.0 else y, framing, weight, notes)
