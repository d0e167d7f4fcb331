"""One conformance suite over every registered operator (see ``registry.py``).

Checks: dot test ⟨A x, y⟩ = ⟨x, Aᴴ y⟩ (relative error < 1e-4 in float32, < 1e-10 in float64),
linearity, batch pass-through, autograd of ``forward`` equal to ``adjoint``, float64 gradcheck,
and the same on CUDA when a device is present.
"""

from __future__ import annotations

import pytest
import torch
from registry import load_all

OPERATORS = load_all()
NAMES = sorted(OPERATORS)

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]


def _rand(shape, dtype, is_complex, seed, device):
    g = torch.Generator().manual_seed(seed)
    if is_complex:
        cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
        return torch.randn(*shape, generator=g, dtype=cdt).to(device)
    return torch.randn(*shape, generator=g, dtype=dtype).to(device)


def _concrete(shape):
    return tuple(4 if s == -1 else s for s in shape)


def _case(name, dtype, device):
    case = OPERATORS[name](dtype, torch.device(device))
    op = case.op
    in_shape = _concrete(op.in_shape)
    x = _rand((*case.batch_shape, *in_shape), dtype, case.in_complex, 1, device)
    y_shape = op.forward(x).shape
    y = _rand(y_shape, dtype, case.out_complex, 2, device)
    return case, op, x, y


def _dot(a, b):
    return (a.conj() * b).sum().real if a.is_complex() else (a * b).sum()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)], ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_dot_test(name, dtype, tol, device):
    case, op, x, y = _case(name, dtype, device)
    ax = op.forward(x)
    aty = op.adjoint(y)
    assert ax.shape == y.shape and aty.shape == x.shape
    lhs = _dot(ax.double() if not ax.is_complex() else ax.to(torch.complex128),
               y.double() if not y.is_complex() else y.to(torch.complex128))
    rhs = _dot(x.double() if not x.is_complex() else x.to(torch.complex128),
               aty.double() if not aty.is_complex() else aty.to(torch.complex128))
    rel = abs(float(lhs - rhs)) / max(abs(float(lhs)), 1e-30)
    assert rel < tol, f"{name}: <Ax,y>={float(lhs)} vs <x,A^H y>={float(rhs)} (rel {rel:.2e})"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_linearity_and_batch(name, device):
    case, op, x, y = _case(name, torch.float64, device)
    z = _rand(x.shape, torch.float64, case.in_complex, 3, device)
    a, b = 0.7, -1.3
    torch.testing.assert_close(op.forward(a * x + b * z), a * op.forward(x) + b * op.forward(z))
    # batch dims pass through: each batch element equals the unbatched call
    for i in range(x.shape[0]):
        torch.testing.assert_close(op.forward(x[i]), op.forward(x)[i])
        torch.testing.assert_close(op.adjoint(y[i]), op.adjoint(y)[i])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_autograd_equals_adjoint(name, device):
    case, op, x, y = _case(name, torch.float64, device)
    x = x.clone().requires_grad_(True)
    loss = _dot(op.forward(x), y)
    (g,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g, op.adjoint(y), rtol=1e-9, atol=1e-9)
    y = y.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad(_dot(op.adjoint(y), x.detach()), y)
    torch.testing.assert_close(gy, op.forward(x.detach()), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    case, op, x, y = _case(name, torch.float64, "cpu")
    x = x[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(op.forward, (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    y = y[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(op.adjoint, (y,), eps=1e-6, atol=1e-6, fast_mode=True)
