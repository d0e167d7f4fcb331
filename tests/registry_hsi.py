"""Conformance entries for the hyperspectral degradations (diffrecon.operators.hsi)."""

from registry import OperatorCase, register

from diffrecon.operators.hsi import (
    Denoising,
    Inpainting,
    MissingBands,
    SpatialSR,
    SpectralCS,
    random_voxel_mask,
)


@register("HSI-Denoising")
def _(dtype, device):
    return OperatorCase(Denoising((5, 4, 3)).to(device))


@register("HSI-Inpainting")
def _(dtype, device):
    return OperatorCase(Inpainting(random_voxel_mask((5, 4, 3), observed=0.3, seed=1)).to(device))


@register("HSI-MissingBands")
def _(dtype, device):
    return OperatorCase(MissingBands((4, 5, 6), missing=[1, 4]).to(device))


@register("HSI-SpatialSR-x2-nonsquare")
def _(dtype, device):
    return OperatorCase(SpatialSR((8, 6, 3), factor=2).to(device))


@register("HSI-SpatialSR-x4")
def _(dtype, device):
    return OperatorCase(SpatialSR((8, 12, 2), factor=4).to(device))


@register("HSI-SpectralCS")
def _(dtype, device):
    return OperatorCase(SpectralCS((3, 4, 7), n_measurements=3, seed=2).to(device))
