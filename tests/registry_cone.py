"""Conformance entries for the cone-beam projector (torch backend: the one with an exact adjoint)."""

import math

from registry import OperatorCase, register

from diffrecon.operators.cone import ConeBeam3D


@register("ConeBeam3D-3views")
def _(dtype, device):
    # non-cubic volume, views hitting both dominant axes (x for θ≈π/2, y for θ≈0), rows past the volume
    op = ConeBeam3D((3, 4, 5), [0.1, 1.2, 2.5], 9.0, 4.0, (3, 6), (1.3, 0.9), backend="torch")
    return OperatorCase(op.to(device))


@register("ConeBeam3D-diagonal")
def _(dtype, device):
    # 45° views put rays on both sides of the x/y dominance switch within one projection
    op = ConeBeam3D((4, 5, 4), [math.pi / 4, 3 * math.pi / 4], 12.0, 6.0, (4, 5), backend="torch")
    return OperatorCase(op.to(device), batch_shape=(2, 1))
