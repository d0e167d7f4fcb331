"""Behaviour of the algebra beyond conformance: pinv, norm, shape errors, repr."""

import pytest
import torch
from registry_basic import _Dense, _Dense2D

from diffrecon import InputDataError
from diffrecon.operators import FiniteDifference, Identity, Mask, SliceWise, VStack


def test_pinv_solves_least_squares():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(8, 5, generator=g, dtype=torch.float64)
    A = _Dense(m)
    y = torch.randn(3, 8, generator=g, dtype=torch.float64)
    x = A.pinv(y, n_iter=20, tol=0)
    expected = torch.linalg.lstsq(m, y.T).solution.T
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-8)
    # Tikhonov damping
    xd = A.pinv(y, n_iter=20, tol=0, damping=0.5)
    expected_d = torch.linalg.solve(m.T @ m + 0.5 * torch.eye(5, dtype=torch.float64), m.T @ y.T).T
    torch.testing.assert_close(xd, expected_d, rtol=1e-8, atol=1e-8)


def test_norm_matches_svd():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert abs(_Dense(m).norm(n_iter=200, dtype=torch.float64) - torch.linalg.svdvals(m)[0].item()) < 1e-6


def test_adjoint_of_adjoint_is_operator():
    A = _Dense(torch.randn(3, 2))
    assert A.H.H is A


def test_shape_errors_are_clear():
    A = _Dense(torch.randn(3, 2))
    with pytest.raises(InputDataError, match=r"expected trailing shape \(2,\).*found shape \(4, 5\)"):
        A.forward(torch.zeros(4, 5))
    with pytest.raises(InputDataError, match="cannot compose"):
        A @ A
    with pytest.raises(InputDataError, match="cannot add"):
        A + _Dense(torch.randn(2, 2))
    with pytest.raises(InputDataError, match="expected a torch.Tensor"):
        A.forward([1.0, 2.0])


def test_mask_rejects_empty_and_nonfinite():
    with pytest.raises(InputDataError, match="empty mask"):
        Mask(torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(InputDataError, match="finite"):
        Mask(torch.tensor([1.0, float("nan")]))


def test_finite_difference_values():
    x = torch.tensor([1.0, 4.0, 9.0])
    torch.testing.assert_close(FiniteDifference(0, "neumann")(x), torch.tensor([3.0, 5.0, 0.0]))
    torch.testing.assert_close(FiniteDifference(0, "periodic")(x), torch.tensor([3.0, 5.0, -8.0]))
    with pytest.raises(InputDataError, match="boundary"):
        FiniteDifference(0, "reflect")


def test_slicewise_matches_loop_and_accepts_any_slice_count():
    op2d = _Dense2D(torch.randn(5, 6, dtype=torch.float64), (2, 3))
    vol = torch.randn(7, 2, 3, dtype=torch.float64)
    out = SliceWise(op2d)(vol)
    torch.testing.assert_close(out, torch.stack([op2d(s) for s in vol]))
    vol_y = torch.randn(2, 7, 3, dtype=torch.float64)  # slice axis 1
    out_y = SliceWise(op2d, axis=1)(vol_y)
    torch.testing.assert_close(out_y, torch.stack([op2d(vol_y[:, k]) for k in range(7)]))
    with pytest.raises(InputDataError, match="2D operator"):
        SliceWise(Identity((2, 3, 4)))


def test_vstack_split_roundtrip():
    shape = (3, 4)
    S = VStack([FiniteDifference(0, shape=shape), Identity(shape)])
    x = torch.randn(shape)
    dx, ix = S.split(S(x))
    torch.testing.assert_close(ix, x)
    torch.testing.assert_close(dx, FiniteDifference(0, shape=shape)(x))


def test_import_does_not_pull_optional_backends():
    import subprocess
    import sys

    code = "import sys, diffrecon, diffrecon.operators, diffrecon.recon; " \
           "bad=[m for m in ('astra','sigpy','diffusers') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
