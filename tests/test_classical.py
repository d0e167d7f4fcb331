"""CG and ADMM-TV on small problems with known answers."""

import pytest
import torch
from registry_basic import _Dense2D

from diffrecon import InputDataError
from diffrecon.operators import FiniteDifference, Identity, Mask
from diffrecon.recon import ADMMTV, admm_tv, cg, soft_threshold


def _piecewise_constant(shape=(12, 12)):
    x = torch.zeros(shape, dtype=torch.float64)
    x[3:9, 2:7] = 1.0
    x[6:11, 5:11] += 0.5
    return x


def test_cg_tikhonov_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(20, 12, generator=g, dtype=torch.float64)
    A = _Dense2D(m, (3, 4))
    y = torch.randn(2, 20, generator=g, dtype=torch.float64)
    x = cg(y, A, n_iter=40, damping=0.3, tol=0)
    expected = torch.linalg.solve(m.T @ m + 0.3 * torch.eye(12, dtype=torch.float64), m.T @ y.T).T
    torch.testing.assert_close(x.flatten(-2), expected, rtol=1e-8, atol=1e-8)


def test_soft_threshold_real_and_complex():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.3, 3.0])
    torch.testing.assert_close(soft_threshold(v, 1.0), torch.tensor([-1.0, 0.0, 0.0, 0.0, 2.0]))
    c = torch.tensor([3 + 4j, 0.1 + 0j])
    torch.testing.assert_close(soft_threshold(c, 1.0), torch.tensor([2.4 + 3.2j, 0j]))


def test_admm_tv_denoising_reduces_error_and_matches_tv_optimality():
    truth = _piecewise_constant()
    g = torch.Generator().manual_seed(1)
    noisy = truth + 0.2 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    A = Identity(truth.shape)
    x = admm_tv(noisy, A, lam=0.15, rho=1.0, n_iter=200, cg_iter=5)
    assert (x - truth).norm() < 0.6 * (noisy - truth).norm()

    # objective value is no worse than at the truth or the noisy input
    def objective(v):
        tv = sum(FiniteDifference(a).forward(v).abs().sum() for a in (-2, -1))
        return 0.5 * ((v - noisy) ** 2).sum() + 0.15 * tv

    assert objective(x) <= objective(truth) + 1e-6
    assert objective(x) <= objective(noisy) + 1e-6


def test_admm_tv_inpainting_recovers_piecewise_constant():
    truth = _piecewise_constant()
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(truth.shape, generator=g) < 0.6
    M = Mask(mask).double()
    y = M(truth)
    lam = 0.01
    x = admm_tv(y, M, lam=lam, rho=0.1, n_iter=300, cg_iter=5)
    assert (x - truth).norm() < 0.5 * (y - truth).norm()  # far better than zero filling

    def objective(v):
        tv = sum(FiniteDifference(a).forward(v).abs().sum() for a in (-2, -1))
        return 0.5 * ((M(v) - y) ** 2).sum() + lam * tv

    assert objective(x) <= objective(truth) + 1e-6  # the truth fits the data exactly; x is at least as good


def test_admm_tv_axes_and_weights_select_regularised_axes():
    # Only axis -2 regularised: each column is denoised independently, so columns stay distinct
    vol = torch.arange(6, dtype=torch.float64).repeat(5, 1)  # constant along axis -2
    g = torch.Generator().manual_seed(3)
    noisy = vol + 0.1 * torch.randn(vol.shape, generator=g, dtype=torch.float64)
    x = admm_tv(noisy, Identity(vol.shape), lam=1.0, rho=1.0, n_iter=200, cg_iter=3, axes=(-2,))
    torch.testing.assert_close(x, x.mean(0, keepdim=True).expand_as(x), atol=1e-3, rtol=0)
    assert torch.all(x[0, 1:] > x[0, :-1])


def test_admm_state_persists_between_steps():
    truth = _piecewise_constant()
    state = ADMMTV(truth, Identity(truth.shape), lam=0.1, rho=1.0, cg_iter=2)
    x = state.step(torch.zeros_like(truth))
    saved = {k: v.clone() for k, v in state.state_dict().items()}
    x2 = state.step(x)
    fresh = ADMMTV(truth, Identity(truth.shape), lam=0.1, rho=1.0, cg_iter=2)
    fresh.load_state_dict(saved)
    torch.testing.assert_close(fresh.step(x), x2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_solvers_reject_non_finite_measurements(bad):
    y = torch.zeros(3, 4)
    y[1, 2] = bad
    with pytest.raises(InputDataError, match=r"NaN/Inf.*index \(1, 2\)"):
        cg(y, Identity((3, 4)))
    with pytest.raises(InputDataError, match="NaN/Inf"):
        admm_tv(y, Identity((3, 4)), lam=0.1)


def test_admm_tv_rejects_bad_parameters():
    y = torch.zeros(3, 4)
    with pytest.raises(InputDataError, match="lam > 0"):
        admm_tv(y, Identity((3, 4)), lam=0.0)
    with pytest.raises(InputDataError, match="TV axes"):
        admm_tv(y, Identity((3, 4)), lam=0.1, axes=(-3,))
    with pytest.raises(InputDataError, match="weights"):
        admm_tv(y, Identity((3, 4)), lam=0.1, axes=(-1,), weights=(1.0, 2.0))
