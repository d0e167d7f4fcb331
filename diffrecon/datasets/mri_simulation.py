"""Simulated multi-coil MRI acquisitions from magnitude volumes.

No public raw multi-coil k-space ships offline, so it is simulated (see ``docs/mri.md``). As for CT,
building the acquisition (coil maps, mask, operator) is separate from measuring:

* :func:`simulate_mri` — **the** MRI simulation: apply a multi-coil Cartesian operator
  (:class:`~diffrecon.operators.MultiCoilMRI`, or a ``SliceWise`` around one) to an image stack or
  volume and add complex Gaussian noise at a given SNR (definition below);
* :func:`simulate_multicoil` — the realistic acquisition of ``diffrecon simulate --modality mri``:

  1. the magnitude volume is scaled to [0, 1] and sliced along ``slice_axis`` into a stack ``(S, H, W)``;
  2. optionally a smooth random phase φ (a few low-frequency cosines, at most ``max_phase`` radians) is
     applied: x = |v|·exp(iφ);
  3. coil sensitivities S_c come from :func:`~diffrecon.operators.birdcage_maps` on the 3-D grid (so
     they vary smoothly across slices too), RSS-normalised;
  4. the sampling mask comes from :func:`make_mask`; then :func:`simulate_mri` measures.

  (:func:`diffrecon.recon.problems.mri_problem` builds a simpler acquisition — real images, 2-D maps
  shared by all slices — with :func:`diffrecon.recon.problems.mri_operator` and measures with
  :func:`simulate_mri` too.)

Noise and SNR (one definition for every simulated MRI acquisition in diffrecon): fully sampled
k-space y_c = F₂(S_c x) (centred orthonormal 2-D FFT per slice) plus circularly symmetric complex
Gaussian noise n ~ CN(0, σ²) (E|n|² = σ², real and imaginary parts each with variance σ²/2), then the
sampling mask is applied (unsampled entries are exactly zero), and

    SNR_dB = 10·log10(P / σ²),   P = (1 / (S·C·H·W)) Σ_{s, c, k} |F₂(S_c x_s)(k)|²,

the mean signal power over slices, coils and *all* k-space grid points (sampled or not), so σ does
not depend on the mask or the acceleration (the per-sample noise of the receiver). By Parseval P is
also the mean coil-image power over all voxels, background included; with RSS-normalised maps
(Σ_c |S_c|² = 1) P = mean|x|² / C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputDataError
from ..operators import (
    LinearOperator,
    MultiCoilMRI,
    SliceWise,
    birdcage_maps,
    equispaced1d_mask,
    gaussian1d_mask,
    poisson2d_mask,
    radial_mask,
    uniform1d_mask,
)

Tensor = torch.Tensor

MASKS = ("uniform1d", "equispaced1d", "gaussian1d", "poisson2d", "radial")


@dataclass
class SimulatedMRI:
    """A simulated acquisition (all tensors on the CPU unless moved).

    Attributes:
        kspace: ``(S, C, H, W)`` complex64, masked (zeros where unsampled), noisy.
        mask: ``(H, W)`` bool sampling mask (the same for every slice).
        maps: ``(S, C, H, W)`` complex64 true coil sensitivities (Σ_c |S_c|² = 1).
        image: ``(S, H, W)`` complex64 ground-truth image (magnitude in [0, 1] times the phase).
        acceleration: realised acceleration of the mask.
        noise_std: σ of the complex noise (E|n|² = σ²).
        snr_db: the requested SNR.
        affine: 4×4 voxel-to-world affine of the source volume (identity if none was given).
        slice_axis: which source-volume axis became the slice axis S.
        scale: the source volume was divided by this (its maximum) to get the [0, 1] magnitude.
    """

    kspace: Tensor
    mask: Tensor
    maps: Tensor
    image: Tensor
    acceleration: float
    noise_std: float
    snr_db: float
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    slice_axis: int = 2
    scale: float = 1.0

    @property
    def magnitude(self) -> Tensor:
        return self.image.abs()

    def to_volume(self, stack: Tensor) -> Tensor:
        """Move a ``(S, H, W)`` stack back to the source volume's axis order."""
        return stack.movedim(0, self.slice_axis)

    def operator(self) -> MultiCoilMRI:
        """The exact forward model (true maps, mask) of this acquisition."""
        return MultiCoilMRI(self.maps, self.mask)


def smooth_phase(shape, max_phase: float = math.pi / 2, n_terms: int = 4, seed: int = 0) -> Tensor:
    """A smooth random phase map φ on ``shape`` (2-D or 3-D): Σ_k a_k cos(2π⟨f_k, r⟩ + b_k), scaled so
    max|φ| = ``max_phase``; spatial frequencies f_k are below one cycle per field of view."""
    g = torch.Generator().manual_seed(int(seed))
    axes = [torch.linspace(0.0, 1.0, int(n), dtype=torch.float64) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    phi = torch.zeros(tuple(int(n) for n in shape), dtype=torch.float64)
    for _ in range(n_terms):
        f = torch.rand(len(shape), generator=g, dtype=torch.float64) * 1.0
        a = torch.rand((), generator=g, dtype=torch.float64) + 0.5
        b = torch.rand((), generator=g, dtype=torch.float64) * 2 * math.pi
        arg = sum(fi * m for fi, m in zip(f, mesh, strict=True))
        phi = phi + a * torch.cos(2 * math.pi * arg + b)
    phi = phi - phi.mean()
    return (phi * (max_phase / phi.abs().max().clamp_min(1e-12))).to(torch.float32)


def make_mask(
    kind: str, shape, acceleration: float, center_fraction: float = 0.08, calib: int = 24, seed: int = 0
):
    """Dispatch to the mask generators of :mod:`diffrecon.operators.mri` by name (see ``MASKS``)."""
    if kind == "uniform1d":
        return uniform1d_mask(shape, acceleration, center_fraction, seed=seed)
    if kind == "equispaced1d":
        return equispaced1d_mask(shape, acceleration, center_fraction, seed=seed)
    if kind == "gaussian1d":
        return gaussian1d_mask(shape, acceleration, center_fraction, seed=seed)
    if kind == "poisson2d":
        return poisson2d_mask(shape, acceleration, calib=calib, seed=seed)
    if kind == "radial":
        return radial_mask(shape, acceleration, seed=seed)
    raise InputDataError(f"mask: expected one of {MASKS}, found {kind!r}")


@dataclass
class MRISimulation:
    """Measurements from :func:`simulate_mri`.

    Attributes:
        kspace: masked noisy k-space, ``operator.out_shape`` (``(S, C, H, W)`` complex; zeros where
            unsampled).
        noise_std: σ of the complex noise (E|n|² = σ²; 0 when noiseless).
        snr_db: the requested SNR (``None``: noiseless).
        operator: the operator that was applied.
    """

    kspace: Tensor
    noise_std: float
    snr_db: float | None
    operator: LinearOperator


def _cartesian(operator) -> tuple[MultiCoilMRI, int | None]:
    """The multi-coil operator inside ``operator`` and the ``SliceWise`` slice axis (``None``: none)."""
    inner, axis = operator, None
    if isinstance(operator, SliceWise):
        inner, axis = operator.op2d, operator.axis
    if not isinstance(inner, MultiCoilMRI):
        raise InputDataError(
            "simulate_mri: expected a MultiCoilMRI operator (or SliceWise(MultiCoilMRI)), found "
            f"{type(operator).__name__}"
            + (f"({type(inner).__name__})" if inner is not operator else "")
        )
    return inner, axis


def simulate_mri(volume: Tensor, operator: LinearOperator, snr_db: float | None = None, seed: int = 0):
    """Measure ``volume`` with a multi-coil Cartesian ``operator`` and add noise at ``snr_db`` (the one
    MRI simulation; the SNR definition is in the module docstring).

    y = M ⊙ (F₂(S_c x) + n), n ~ CN(0, σ²) on the full grid, σ² = P / 10^(SNR_dB/10) with P the mean
    of |F₂(S_c x)|² over slices, coils and all k-space points. Without noise y = A x exactly.

    Args:
        volume: the operator's input (a real image for ``real_input=True`` operators).
        operator: :class:`~diffrecon.operators.MultiCoilMRI` or ``SliceWise`` around one.
        snr_db: SNR in dB, or ``None`` for noiseless measurements.
        seed: seed of the noise generator (a CPU generator: the same seed gives the same noise on every
            device). The builders of this package seed their masks with ``seed`` and pass ``seed + 1``
            here.

    Returns:
        :class:`MRISimulation`.
    """
    inner, axis = _cartesian(operator)
    if snr_db is None:
        return MRISimulation(operator(volume), 0.0, None, operator)
    if not math.isfinite(float(snr_db)):
        raise InputDataError(f"simulate_mri: expected a finite snr_db (or None), found {snr_db}")
    full = MultiCoilMRI(
        inner.maps,
        torch.ones(inner.grid, dtype=torch.bool, device=inner.mask.device),
        real_input=inner.real_input,
        n_slices=inner.n_slices,
    )
    if axis is not None:
        full = SliceWise(full, axis=axis)
    k = full(volume)
    power = float((k.abs() ** 2).mean())
    sigma = math.sqrt(power / 10 ** (float(snr_db) / 10))
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(k.shape, generator=g, dtype=torch.complex64) * sigma  # E|n|^2 = sigma^2
    mask = inner.mask
    if mask.ndim == 3:  # per-slice (S, H, W) → (S, 1, H, W) over the coil axis
        mask = mask.unsqueeze(1)
    k = (k + noise.to(k.device)) * mask.to(k.device)
    return MRISimulation(k, sigma, float(snr_db), operator)


MULTICOIL_BYTES = 96
"""Peak bytes per (slice, coil, pixel) of :func:`simulate_multicoil`: the float64 coil-map intermediates
of :func:`~diffrecon.operators.coils.birdcage_maps`, then complex64 maps, k-space, noise and the noisy
k-space."""


def _check_multicoil_memory(shape: tuple, slice_axis: int, n_coils: int) -> None:
    """Refuse, before the coil maps are made, a coil count whose arrays would not fit in memory."""
    from ..io.sinogram import check_memory

    voxels = math.prod(shape)
    plane = "x".join(str(n) for i, n in enumerate(shape) if i != slice_axis)
    check_memory(voxels * n_coils * MULTICOIL_BYTES, "simulate_multicoil",
                 f"{n_coils:,} coils x {shape[slice_axis]} slices of {plane} (maps, k-space and noise)")


def simulate_multicoil(
    volume: Tensor | np.ndarray,
    n_coils: int = 8,
    acceleration: float = 4.0,
    mask: str = "uniform1d",
    center_fraction: float = 0.08,
    calib: int = 24,
    snr_db: float = 30.0,
    phase: bool = True,
    max_phase: float = math.pi / 2,
    slice_axis: int = 2,
    affine: np.ndarray | None = None,
    coil_radius: float = 1.5,
    seed: int = 0,
) -> SimulatedMRI:
    """Simulate a 2-D multi-slice multi-coil Cartesian acquisition of a magnitude volume.

    Args:
        volume: 3-D magnitude volume (any non-negative scale; it is divided by its maximum).
        n_coils: number of receive coils C.
        acceleration: undersampling factor (sampled fraction ≈ 1/acceleration); one mask for all slices.
        mask: mask family, one of :data:`~diffrecon.datasets.mri_simulation.MASKS`.
        center_fraction: fully sampled central fraction of the phase-encode lines (1-D masks).
        calib: calibration box side of ``poisson2d`` (default max(2, min(24, min(H, W) // 4))).
        snr_db: SNR in dB (the definition is in the module docstring; :func:`simulate_mri` adds the noise).
        phase: apply a smooth random phase (``max_phase`` radians at most).
        slice_axis: volume axis to slice along; slices become the leading axis S.
        affine: the volume's affine, carried along for writing reconstructions.
        coil_radius: coil distance from the centre in half fields of view.
        seed: seeds the mask, the phase and the noise.

    Returns:
        :class:`SimulatedMRI`.

    Raises:
        InputDataError: a bad argument, or a coil count whose maps and k-space would need more memory
            than the limit (:func:`~diffrecon.io.sinogram.check_memory`), refused before they are made.
    """
    v = torch.as_tensor(np.asarray(volume) if not isinstance(volume, Tensor) else volume).to(torch.float32)
    if v.ndim != 3:
        raise InputDataError(f"simulate_multicoil: expected a 3-D volume, found shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise InputDataError("simulate_multicoil: expected finite voxel values, found NaN/Inf")
    if slice_axis not in (0, 1, 2):
        raise InputDataError(f"simulate_multicoil: slice_axis must be 0, 1 or 2, found {slice_axis}")
    if int(n_coils) < 1:
        raise InputDataError(f"simulate_multicoil: expected n_coils >= 1, found {n_coils}")
    _check_multicoil_memory(tuple(v.shape), slice_axis, int(n_coils))
    if not math.isfinite(snr_db):
        raise InputDataError(f"simulate_multicoil: expected a finite snr_db, found {snr_db}")
    v = v.clamp_min(0)
    scale = float(v.max())
    if scale <= 0:
        raise InputDataError("simulate_multicoil: the volume is zero everywhere")
    stack = (v / scale).movedim(slice_axis, 0).contiguous()  # (S, H, W)
    s, h, w = stack.shape
    img = stack.to(torch.complex64)
    if phase:
        img = img * torch.polar(torch.ones_like(stack), smooth_phase((s, h, w), max_phase, seed=seed))
    maps = birdcage_maps((int(n_coils), s, h, w), radius=coil_radius).permute(1, 0, 2, 3).contiguous()
    m = make_mask(mask, (h, w), acceleration, center_fraction, calib, seed)
    sim = simulate_mri(img, MultiCoilMRI(maps, m.mask), snr_db, seed=int(seed) + 1)
    return SimulatedMRI(
        kspace=sim.kspace,
        mask=m.mask,
        maps=maps,
        image=img,
        acceleration=m.acceleration,
        noise_std=sim.noise_std,
        snr_db=float(snr_db),
        affine=np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64),
        slice_axis=int(slice_axis),
        scale=scale,
    )


BRAIN_SLAB_FIRST = 80
"""First ch2 axial slice (array axis 2) of the bundled full-resolution slab."""
BRAIN_SLAB_SLICES = 32
"""Axial slices in the bundled slab (ch2 slices 80–111, through the ventricles)."""
BRAIN_SOURCES = ("colin27-slab", "colin27", "mni152")


def brain_volume(source: str = "colin27-slab") -> tuple[np.ndarray, np.ndarray, str]:
    """A real T1 brain volume available offline: ``(data, affine, description)``.

    ``data`` is float32 ``(X, Y, Z)`` in the file's intensity units (not normalised), ``affine`` the 4×4
    voxel → world-mm map. The source is always the one asked for; nothing falls back silently.

    Args:
        source: ``"colin27-slab"`` (default; shipped with the package): 32 axial slices (ch2 slices
            80–111) of Debian ``mricron-data``'s Colin27 single-subject T1 ``ch2.nii.gz`` at its full 1 mm
            resolution, 181×217×32, original uint8 values, affine of the full volume translated to the
            slab (``scripts/make_brain_slab.py`` rebuilds it). ``"colin27"``: the whole 181×217×181
            ``ch2.nii.gz`` from an installed ``mricron-data``. ``"mni152"``: nilearn's MNI152 2009 T1
            template (``resolution=1``; an average, skull-stripped brain: a different test case).

    Raises:
        InputDataError: an unknown ``source``.
        MissingDependencyError: ``"colin27"`` without ``mricron-data`` or ``"mni152"`` without nilearn.
    """
    import glob
    import importlib.resources

    import nibabel as nib

    from ..errors import MissingDependencyError

    if source not in BRAIN_SOURCES:
        raise InputDataError(f"brain_volume: source must be one of {BRAIN_SOURCES}, found {source!r}")
    if source == "colin27-slab":
        path = importlib.resources.files("diffrecon.datasets") / "data" / "colin27_t1_slab.nii.gz"
        with importlib.resources.as_file(path) as file:
            img = nib.load(file)
            data = np.asarray(img.dataobj, dtype=np.float32)
        last = BRAIN_SLAB_FIRST + BRAIN_SLAB_SLICES - 1
        desc = f"Colin27 T1, ch2 axial slices {BRAIN_SLAB_FIRST}-{last} (bundled)"
        return data, np.asarray(img.affine), desc
    if source == "colin27":
        hits = sorted(
            glob.glob("/usr/share/mricron/templates/ch2.nii.gz")
            + glob.glob("/usr/share/**/ch2.nii.gz", recursive=True)
        )
        if not hits:
            raise MissingDependencyError(
                "brain_volume('colin27'): the full Colin27 volume comes from Debian's mricron-data "
                "(apt-get install mricron-data); brain_volume() loads the bundled full-resolution slab"
            )
        img = nib.load(hits[0])
        return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine), f"Colin27 T1 ({hits[0]})"
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise MissingDependencyError(
            "brain_volume('mni152') needs nilearn: pip install 'diffrecon[data]'"
        ) from exc
    img = datasets.load_mni152_template(resolution=1)
    desc = "MNI152 2009 T1 template (nilearn)"
    return np.asarray(img.get_fdata(), dtype=np.float32), np.asarray(img.affine), desc
