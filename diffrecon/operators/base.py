"""Linear operator algebra on ``torch.nn.Module``.

A :class:`LinearOperator` maps tensors of shape ``(..., *in_shape)`` to ``(..., *out_shape)``; any
leading (batch) dimensions pass through untouched. Every operator is *matched*: ``adjoint`` is the
exact adjoint with respect to the real inner product ⟨a, b⟩ = Re Σ conj(a)·b, so the dot test
⟨A x, y⟩ = ⟨x, Aᴴ y⟩ holds to rounding, and autograd through ``forward`` gives ``adjoint``.

Operators compose like matrices::

    A @ B          composition, x ↦ A(B(x))
    A + B, A - B   sums (same shapes)
    2.0 * A        scalar multiples
    A.H            the adjoint operator
    VStack([A, B]) x ↦ concat(flatten(A x), flatten(B x))

and ``A.pinv(y)`` solves the least-squares problem min ‖A x − y‖² (+ damping·‖x‖²) by CG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputDataError
from .linalg import conjugate_gradient, power_method

Tensor = torch.Tensor
Shape = tuple[int, ...]


def _as_shape(shape: Sequence[int] | int | None) -> Shape | None:
    if shape is None:
        return None
    if isinstance(shape, int):
        return (int(shape),)
    return tuple(int(s) for s in shape)


def shapes_compatible(a: Shape | None, b: Shape | None) -> bool:
    """True when two declared shapes can describe the same tensor (None / -1 entries are wildcards)."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


class _ApplyOperator(torch.autograd.Function):
    """Runs ``op._forward`` (or ``op._adjoint``) without building a graph; its backward is the other one.

    Used by operators whose forward is not a plain chain of differentiable torch ops (sparse
    matrices, scatter kernels, external libraries): memory stays at one input and one output, and
    the gradient is the matched adjoint by construction. Backward is itself an ``_ApplyOperator``
    call, so double backward (and ``gradgradcheck``) works.
    """

    @staticmethod
    def forward(ctx, op: LinearOperator, transpose: bool, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.op = op
        ctx.transpose = transpose
        with torch.no_grad():
            return op._adjoint(x) if transpose else op._forward(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, None, _ApplyOperator.apply(ctx.op, not ctx.transpose, grad)


class LinearOperator(nn.Module):
    """Base class: a linear map with an exact adjoint.

    Subclasses implement ``_forward(x)`` and ``_adjoint(y)`` on tensors whose trailing dimensions
    are ``in_shape`` / ``out_shape``. Set the class attribute ``custom_autograd = True`` when
    ``_forward`` is not differentiable by torch (or is, but wastefully); autograd then calls
    ``_adjoint`` for the backward pass.

    Args:
        in_shape: trailing shape of the domain; ``None`` for an operator that accepts any shape
            (then it preserves shape), and ``-1`` for an axis of any length.
        out_shape: trailing shape of the range, with the same conventions.
    """

    custom_autograd: bool = False

    def __init__(self, in_shape: Sequence[int] | int | None, out_shape: Sequence[int] | int | None):
        super().__init__()
        self.in_shape: Shape | None = _as_shape(in_shape)
        self.out_shape: Shape | None = _as_shape(out_shape)

    # -- to implement ---------------------------------------------------------------------------
    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Apply the operator: ``(..., *in_shape) → (..., *out_shape)``."""
        self._check(x, self.in_shape, "input")
        if self.custom_autograd and torch.is_grad_enabled() and x.requires_grad:
            return _ApplyOperator.apply(self, False, x)
        return self._forward(x)

    def adjoint(self, y: Tensor) -> Tensor:
        """Apply the exact adjoint: ``(..., *out_shape) → (..., *in_shape)``."""
        self._check(y, self.out_shape, "adjoint input")
        if self.custom_autograd and torch.is_grad_enabled() and y.requires_grad:
            return _ApplyOperator.apply(self, True, y)
        return self._adjoint(y)

    def normal(self, x: Tensor) -> Tensor:
        """Apply the normal operator AᴴA."""
        return self.adjoint(self.forward(x))

    @property
    def H(self) -> LinearOperator:
        """The adjoint as an operator."""
        return Adjoint(self)

    def pinv(
        self,
        y: Tensor,
        n_iter: int = 50,
        tol: float = 1e-6,
        damping: float = 0.0,
        x0: Tensor | None = None,
        callback=None,
    ) -> Tensor:
        """Least-squares solution of A x ≈ y by CG on (AᴴA + damping·I) x = Aᴴ y.

        Each leading (batch) index is solved as its own system; ``callback(k, x)`` runs after CG
        iteration k (:func:`~diffrecon.operators.linalg.conjugate_gradient`).
        """
        rhs = self.adjoint(y)
        n_dims = rhs.ndim if self.in_shape is None else len(self.in_shape)

        def normal(v: Tensor) -> Tensor:
            out = self.normal(v)
            return out + damping * v if damping else out

        return conjugate_gradient(
            normal, rhs, x0=x0, n_iter=n_iter, tol=tol, n_dims=n_dims, callback=callback
        )

    A_dagger = pinv

    def norm(self, n_iter: int = 50, dtype: torch.dtype = torch.float32, device=None, seed: int = 0) -> float:
        """Operator 2-norm ‖A‖ estimated by the power method on AᴴA."""
        if self.in_shape is None or -1 in self.in_shape:
            raise InputDataError(
                f"{type(self).__name__}.norm needs a fully known in_shape, found {self.in_shape}"
            )
        g = torch.Generator(device="cpu").manual_seed(seed)
        x0 = torch.randn(self.in_shape, generator=g, dtype=dtype).to(device or self._device())
        return math.sqrt(max(power_method(self.normal, x0, n_iter=n_iter), 0.0))

    # -- algebra --------------------------------------------------------------------------------
    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return Composition(self, other)
        if isinstance(other, Tensor):
            return self.forward(other)
        return NotImplemented

    def __add__(self, other):
        if isinstance(other, LinearOperator):
            return Sum(self, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return Sum(self, Scaled(other, -1.0))
        return NotImplemented

    def __neg__(self):
        return Scaled(self, -1.0)

    def __mul__(self, scalar):
        if isinstance(scalar, (int, float, complex)):
            return Scaled(self, scalar)
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, scalar):
        if isinstance(scalar, (int, float, complex)):
            return Scaled(self, 1.0 / scalar)
        return NotImplemented

    # -- helpers --------------------------------------------------------------------------------
    def _check(self, t: Tensor, shape: Shape | None, what: str) -> None:
        if not isinstance(t, Tensor):
            raise InputDataError(
                f"{type(self).__name__} {what}: expected a torch.Tensor, found {type(t).__name__}"
            )
        if shape is None:
            return
        n = len(shape)
        if t.ndim < n or not shapes_compatible(tuple(t.shape[t.ndim - n :]), shape):
            raise InputDataError(
                f"{type(self).__name__} {what}: expected trailing shape {shape} (any leading batch dims), "
                f"found shape {tuple(t.shape)}"
            )

    def _device(self) -> torch.device:
        for t in list(self.buffers()) + list(self.parameters()):
            return t.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"


class Adjoint(LinearOperator):
    """Aᴴ as an operator; ``Adjoint(A).H`` is ``A`` again."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.out_shape, op.in_shape)
        self.op = op

    def _forward(self, x):
        return self.op.adjoint(x)

    def _adjoint(self, y):
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:
        return self.op


class Composition(LinearOperator):
    """``A @ B``: x ↦ A(B(x)); adjoint Bᴴ(Aᴴ(y))."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        if not shapes_compatible(outer.in_shape, inner.out_shape):
            raise InputDataError(
                f"cannot compose {type(outer).__name__} (expects input {outer.in_shape}) after "
                f"{type(inner).__name__} (produces {inner.out_shape})"
            )
        # A shape-preserving factor (shape None) takes its shape from the other one.
        in_shape = inner.in_shape if inner.in_shape is not None else outer.in_shape
        out_shape = outer.out_shape if outer.out_shape is not None else inner.out_shape
        super().__init__(in_shape, out_shape)
        self.outer = outer
        self.inner = inner

    def _forward(self, x):
        return self.outer.forward(self.inner.forward(x))

    def _adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))


class Sum(LinearOperator):
    """``A + B`` for operators with identical shapes."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if not (shapes_compatible(a.in_shape, b.in_shape) and shapes_compatible(a.out_shape, b.out_shape)):
            raise InputDataError(
                f"cannot add operators of shapes {a.in_shape}->{a.out_shape} and {b.in_shape}->{b.out_shape}"
            )
        super().__init__(a.in_shape if a.in_shape is not None else b.in_shape,
                         a.out_shape if a.out_shape is not None else b.out_shape)
        self.a = a
        self.b = b

    def _forward(self, x):
        return self.a.forward(x) + self.b.forward(x)

    def _adjoint(self, y):
        return self.a.adjoint(y) + self.b.adjoint(y)


class Scaled(LinearOperator):
    """``c · A`` for a real or complex scalar c; the adjoint uses conj(c)."""

    def __init__(self, op: LinearOperator, scalar: float | complex):
        super().__init__(op.in_shape, op.out_shape)
        self.op = op
        self.scalar = scalar

    def _forward(self, x):
        return self.scalar * self.op.forward(x)

    def _adjoint(self, y):
        c = self.scalar.conjugate() if isinstance(self.scalar, complex) else self.scalar
        return c * self.op.adjoint(y)

    def extra_repr(self) -> str:
        return f"scalar={self.scalar}"


class VStack(LinearOperator):
    """Vertical stack: x ↦ concat(flatten(A₁x), …, flatten(Aₖx)) along one trailing axis.

    All operators share ``in_shape``; the output has trailing shape ``(Σ prod(out_shape_i),)``.
    ``split(y)`` returns the blocks reshaped to each operator's ``out_shape``. Adjoint: Σ Aᵢᴴ yᵢ.
    """

    def __init__(self, ops: Sequence[LinearOperator]):
        ops = list(ops)
        if not ops:
            raise InputDataError("VStack needs at least one operator, found none")
        shapes = {op.in_shape for op in ops}
        if len(shapes) != 1 or any(op.out_shape is None or -1 in op.out_shape for op in ops):
            raise InputDataError(
                f"VStack operators must share in_shape and have fixed out_shapes, found "
                f"{[(op.in_shape, op.out_shape) for op in ops]}"
            )
        self.sizes = [math.prod(op.out_shape) for op in ops]
        super().__init__(ops[0].in_shape, (sum(self.sizes),))
        self.ops = nn.ModuleList(ops)

    def split(self, y: Tensor) -> list[Tensor]:
        """Blocks of a stacked output, each reshaped to its operator's ``out_shape``."""
        lead = y.shape[:-1]
        return [b.reshape(*lead, *op.out_shape)
                for b, op in zip(torch.split(y, self.sizes, dim=-1), self.ops, strict=True)]

    def _forward(self, x):
        lead = x.shape[: x.ndim - len(self.in_shape)]
        return torch.cat([op.forward(x).reshape(*lead, -1) for op in self.ops], dim=-1)

    def _adjoint(self, y):
        blocks = self.split(y)
        out = self.ops[0].adjoint(blocks[0])
        for op, b in zip(list(self.ops)[1:], blocks[1:], strict=True):
            out = out + op.adjoint(b)
        return out


class Identity(LinearOperator):
    """The identity on tensors with trailing shape ``shape``."""

    def __init__(self, shape: Sequence[int] | int | None = None):
        super().__init__(shape, shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y
