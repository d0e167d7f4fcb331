"""Conformance entries for the algebra and elementary operators."""

import torch
from registry import OperatorCase, register

from diffrecon.operators import FiniteDifference, Identity, LinearOperator, Mask, SliceWise, VStack


class _Dense(LinearOperator):
    """A dense matrix acting on the last axis, differentiable by torch (used to test the algebra)."""

    def __init__(self, m):
        super().__init__((m.shape[1],), (m.shape[0],))
        self.register_buffer("m", m)

    def _forward(self, x):
        return x @ self.m.T.to(x.dtype)

    def _adjoint(self, y):
        return y @ self.m.conj().to(y.dtype)


class _Dense2D(LinearOperator):
    """A dense matrix acting on a flattened (h, w) image, custom autograd path."""

    custom_autograd = True

    def __init__(self, m, shape):
        super().__init__(shape, (m.shape[0],))
        self.register_buffer("m", m)

    def _forward(self, x):
        return x.flatten(-2) @ self.m.T.to(x.dtype)

    def _adjoint(self, y):
        return (y @ self.m.to(y.dtype)).unflatten(-1, self.in_shape)


def _mat(rows, cols, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g, dtype=dtype).to(device)


@register("Identity")
def _(dtype, device):
    return OperatorCase(Identity((3, 4)))


@register("Mask")
def _(dtype, device):
    g = torch.Generator().manual_seed(0)
    return OperatorCase(Mask(torch.rand(4, 5, generator=g) > 0.5).to(device))


@register("FiniteDifference-neumann")
def _(dtype, device):
    return OperatorCase(FiniteDifference(axis=0, boundary="neumann", shape=(5, 4)))


@register("FiniteDifference-periodic")
def _(dtype, device):
    return OperatorCase(FiniteDifference(axis=-1, boundary="periodic", shape=(3, 6)))


@register("FiniteDifference-communicator")
def _(dtype, device):
    from diffrecon.recon.diffusion import LocalComm

    return OperatorCase(FiniteDifference(axis=-3, boundary="periodic", shape=(4, 3, 2), comm=LocalComm(4)))


@register("MoveAxis")
def _(dtype, device):
    from diffrecon.operators import MoveAxis

    return OperatorCase(MoveAxis(2, 0, (3, 4, 5)))


@register("Composition+Sum+Scaled")
def _(dtype, device):
    a = _Dense(_mat(5, 4, dtype, device, 1))
    b = _Dense(_mat(4, 3, dtype, device, 2))
    c = _Dense(_mat(4, 3, dtype, device, 3))
    return OperatorCase(2.5 * (a @ (b - c)) + a @ b)


@register("Adjoint")
def _(dtype, device):
    return OperatorCase(_Dense2D(_mat(7, 6, dtype, device, 4), (2, 3)).H)


@register("VStack")
def _(dtype, device):
    shape = (3, 4)
    return OperatorCase(VStack([FiniteDifference(0, shape=shape), FiniteDifference(1, shape=shape),
                                _Dense2D(_mat(5, 12, dtype, device, 5), shape)]))


@register("SliceWise-axis0")
def _(dtype, device):
    return OperatorCase(SliceWise(_Dense2D(_mat(7, 6, dtype, device, 6), (2, 3)), axis=0, n_slices=4))


@register("SliceWise-axis2")
def _(dtype, device):
    return OperatorCase(SliceWise(_Dense2D(_mat(7, 6, dtype, device, 7), (2, 3)), axis=2, n_slices=4))
