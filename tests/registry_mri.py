"""Conformance entries for the MRI operators (tiny sizes; even and odd grids take different FFT paths)."""

import torch
from registry import OperatorCase, register

from diffrecon.operators.coils import birdcage_maps
from diffrecon.operators.mri import (
    MultiCoilMRI,
    MultiCoilMRI3D,
    NonCartesianMRI,
    SingleCoilMRI,
    radial_trajectory,
)
from diffrecon.operators.sampling import uniform1d_mask


def _maps(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    m = birdcage_maps(shape).to(cdt)
    # perturb so that the test does not rely on the birdcage structure
    return (m + 0.1 * torch.randn(shape, generator=g, dtype=cdt)).to(device)


def _mask(shape, seed=0):
    return uniform1d_mask(shape, 2.0, center_fraction=0.2, seed=seed).mask


@register("MultiCoilMRI-even")
def _(dtype, device):
    return OperatorCase(
        MultiCoilMRI(_maps((3, 6, 8), dtype, device), _mask((6, 8))).to(device),
        in_complex=True,
        out_complex=True,
    )


@register("MultiCoilMRI-odd")
def _(dtype, device):
    return OperatorCase(
        MultiCoilMRI(_maps((2, 5, 7), dtype, device), _mask((5, 7))).to(device),
        in_complex=True,
        out_complex=True,
    )


@register("MultiCoilMRI-per-slice")
def _(dtype, device):
    maps = _maps((2, 3, 4, 6), dtype, device).permute(1, 0, 2, 3).contiguous()  # (S=3, C=2, 4, 6)
    return OperatorCase(MultiCoilMRI(maps, _mask((4, 6))).to(device), in_complex=True, out_complex=True)


@register("MultiCoilMRI-per-slice-mask")
def _(dtype, device):
    mask = torch.stack([_mask((4, 6), seed=s) for s in range(3)])
    return OperatorCase(
        MultiCoilMRI(_maps((2, 4, 6), dtype, device), mask).to(device), in_complex=True, out_complex=True
    )


@register("MultiCoilMRI-real-input")
def _(dtype, device):
    return OperatorCase(
        MultiCoilMRI(_maps((2, 6, 5), dtype, device), _mask((6, 5)), real_input=True).to(device),
        in_complex=False,
        out_complex=True,
    )


@register("SingleCoilMRI")
def _(dtype, device):
    return OperatorCase(SingleCoilMRI(_mask((6, 8))).to(device), in_complex=True, out_complex=True)


@register("SingleCoilMRI-odd-real")
def _(dtype, device):
    return OperatorCase(
        SingleCoilMRI(_mask((5, 5))[0], image_shape=(5, 5), real_input=True).to(device),
        in_complex=False,
        out_complex=True,
    )


@register("MultiCoilMRI3D")
def _(dtype, device):
    mask = _mask((4, 6))[:, None, :]  # (D, 1, W): phase encodes D x W, readout H fully sampled
    return OperatorCase(
        MultiCoilMRI3D(_maps((2, 4, 5, 6), dtype, device), mask).to(device), in_complex=True, out_complex=True
    )


@register("NonCartesianMRI-sigpy")
def _(dtype, device):
    coord = radial_trajectory(3, 6, dtype=torch.float64)
    return OperatorCase(
        NonCartesianMRI(coord, _maps((2, 6, 6), dtype, device)).to(device), in_complex=True, out_complex=True
    )


@register("MultiCoilMRI-shared-maps-n_slices")
def _(dtype, device):
    return OperatorCase(
        MultiCoilMRI(_maps((2, 4, 6), dtype, device), _mask((4, 6)), n_slices=3).to(device),
        in_complex=True,
        out_complex=True,
    )
