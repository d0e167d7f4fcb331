"""Conformance entries for the framing operator F (prior's frame → a volume's voxel grid)."""

from registry import OperatorCase, register

from diffrecon.operators import Framing, FramingOperator


@register("FramingOperator-upsample-flip")
def _(dtype, device):
    # 4 x 4 prior images into 7 x 9 planes, slices on axis 2, the columns flipped, an off-centre frame
    f = Framing((7, 9, 3), slice_axis=2, prior_shape=(4, 4), row_axis=0, col_axis=1,
                centre=(3.2, 4.1), step=(1.7, 2.2), flip=(False, True))
    return OperatorCase(FramingOperator(f).to(device))


@register("FramingOperator-downsample-transposed")
def _(dtype, device):
    # 6 x 5 prior images into 3 x 4 planes (coarser than the prior), rows along axis 2, slices on axis 1
    f = Framing((4, 2, 3), slice_axis=1, prior_shape=(6, 5), row_axis=2, col_axis=0,
                centre=(1.0, 1.5), step=(0.45, 0.8), flip=(True, False))
    return OperatorCase(FramingOperator(f).to(device))


@register("FramingOperator-reorient")
def _(dtype, device):
    return OperatorCase(Framing.reorient((3, 5, 4), 0, 2, 1, (True, True)).operator().to(device))


@register("FramingOperator-complex")
def _(dtype, device):
    f = Framing((5, 3, 6), slice_axis=1, prior_shape=(4, 4), row_axis=0, col_axis=2,
                centre=(2.0, 2.5), step=(1.2, 1.5))
    return OperatorCase(FramingOperator(f).to(device), in_complex=True, out_complex=True)
