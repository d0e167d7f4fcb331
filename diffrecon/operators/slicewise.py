"""Apply a 2D operator to every slice of a volume in one batched call."""

from __future__ import annotations

from .base import LinearOperator


class SliceWise(LinearOperator):
    """Volume operator built from a 2D operator applied independently to each slice.

    For a volume x of shape ``(..., *vol)`` whose slice axis is ``axis`` (an index into the three
    volume axes), ``SliceWise(A)(x)[..., k, :] = A(x_k)`` where ``x_k`` is slice k. Internally the
    slice axis becomes a batch axis, so the 2D operator runs once on all slices (no Python loop).

    Shapes: in ``(..., D, H, W)`` with the slice axis moved to ``axis``; out ``(..., D, *A.out_shape)``
    (the slice axis always leads the measurement axes, e.g. ``(D, n_angles, n_detectors)`` for CT).

    Args:
        op2d: operator with a 2-D ``in_shape``.
        axis: which of the three volume axes is the slice axis (0, 1, 2 or −3, −2, −1).
        n_slices: number of slices, or ``None`` for any number.
    """

    def __init__(self, op2d: LinearOperator, axis: int = 0, n_slices: int | None = None):
        from ..errors import InputDataError

        if op2d.in_shape is None or len(op2d.in_shape) != 2:
            raise InputDataError(
                f"SliceWise: expected a 2D operator (in_shape of length 2), found {op2d.in_shape}"
            )
        if axis not in (0, 1, 2, -1, -2, -3):
            raise InputDataError(f"SliceWise: axis must be one of 0, 1, 2 (or -3..-1), found {axis}")
        self.axis = axis % 3
        n = -1 if n_slices is None else int(n_slices)
        vol = list(op2d.in_shape)
        vol.insert(self.axis, n)
        out = (n, *op2d.out_shape) if op2d.out_shape is not None else None
        super().__init__(tuple(vol), out)
        self.op2d = op2d

    def _forward(self, x):
        src = x.ndim - 3 + self.axis
        return self.op2d.forward(x.movedim(src, x.ndim - 3))

    def _adjoint(self, y):
        x = self.op2d.adjoint(y)
        return x.movedim(x.ndim - 3, x.ndim - 3 + self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, in_shape={self.in_shape}, out_shape={self.out_shape}"
