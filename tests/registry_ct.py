"""Conformance entries for the 2D CT projectors (tiny geometries; both execution paths)."""

import math

from registry import OperatorCase, register

from diffrecon.operators.ct import FanBeam2D, ParallelBeam2D, limited_angles, sparse_angles

# memory_budget_bytes=0 forces the matrix-free path (weights generated per block of views).
_MATRIX_FREE = 0


@register("ParallelBeam2D-matrix")
def _(dtype, device):
    return OperatorCase(ParallelBeam2D((6, 5), sparse_angles(3)).to(device))


@register("ParallelBeam2D-matrixfree")
def _(dtype, device):
    return OperatorCase(ParallelBeam2D((6, 5), sparse_angles(3), memory_budget_bytes=_MATRIX_FREE).to(device))


@register("ParallelBeam2D-limited-wide")
def _(dtype, device):
    # non-square, 45° views (tie-break), coarser bins, odd angle set
    return OperatorCase(
        ParallelBeam2D((4, 7), limited_angles(135, 45), 6, 1.5).to(device), batch_shape=(2, 1)
    )


@register("FanBeam2D-matrix")
def _(dtype, device):
    return OperatorCase(FanBeam2D((5, 6), sparse_angles(4) * 2, 12.0, 8.0, 11, 1.3).to(device))


@register("FanBeam2D-matrixfree")
def _(dtype, device):
    return OperatorCase(
        FanBeam2D(
            (5, 6), [0.1, 1.9, 2 * math.pi - 0.4], 12.0, 8.0, 11, 1.3, memory_budget_bytes=_MATRIX_FREE
        ).to(device)
    )
