"""The shared sampler skeleton: determinism, resume, chunking, records, fail-fast validation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_sampler_priors import ct_problem, gaussian_prior, gaussian_volume, unet_prior

from diffrecon.errors import InputDataError
from diffrecon.operators import ParallelBeam2D, SliceWise, sparse_angles
from diffrecon.priors.prior import DiffusionPrior
from diffrecon.priors.schedule import VPSchedule
from diffrecon.recon.classical import ADMMTV
from diffrecon.recon.diffusion import DDS, DiffusionMBIR, LocalComm, exact_equivalent


@pytest.fixture(scope="module")
def tiny():
    """The analytic Gaussian prior (cheap, exact) on a 4-slice 16×16 volume, 4-view CT."""
    prior = gaussian_prior(16)
    vol = torch.rand(4, 16, 16)
    y, A = ct_problem(vol, 4)
    return prior, y, A


def _dds(prior, **kw):
    kw.setdefault("steps", 4)
    return DDS(prior, lam=0.05, rho=1.0, progress=False, **kw)


def test_same_seed_same_output_with_a_network():
    prior = unet_prior(16)
    y, A = ct_problem(torch.rand(3, 16, 16), 4)
    x1, r1 = _dds(prior, seed=3, steps=2)(y, A)
    x2, _ = _dds(prior, seed=3, steps=2)(y, A)
    x3, _ = _dds(prior, seed=4, steps=2)(y, A)
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)
    assert r1.nfe == 2 and r1.slice_evaluations == 6 and r1.steps == 2
    json.dumps(r1.to_dict())
    x4, _ = _dds(prior, seed=3, steps=2, chunk_size=1)(y, A)  # chunking changes only float rounding
    assert torch.allclose(x1, x4, atol=1e-4)


def test_output_layout_follows_the_slice_axis():
    prior = gaussian_prior(8)
    vol = gaussian_volume(prior, 3)  # (S, 8, 8)
    A1 = SliceWise(ParallelBeam2D((8, 8), sparse_angles(3)), axis=1)
    volume_axis1 = vol.movedim(0, 1).contiguous()  # (8, S, 8)
    y = A1(volume_axis1)
    x, _ = DDS(prior, steps=3, lam=0.05, rho=1.0, progress=False)(y, A1)
    y0, A0 = ct_problem(vol, 3)
    x0, _ = DDS(prior, steps=3, lam=0.05, rho=1.0, progress=False)(y0, A0)
    assert x.shape == volume_axis1.shape
    assert torch.allclose(x.movedim(1, 0), x0, atol=1e-5)


@pytest.mark.parametrize("solver", ["dds", "mbir"])
def test_resume_reproduces_uninterrupted_run(tiny, tmp_path, solver):
    prior, y, A = tiny

    def make(**kw):
        if solver == "dds":
            return _dds(prior, steps=5, **kw)
        return DiffusionMBIR(prior, steps=5, lam=0.01, rho=1.0, final_consistency=True, progress=False, **kw)

    full, rec_full = make(seed=7)(y, A)

    class Stop(Exception):
        pass

    def interrupt(i, x, info):
        if i == 2:
            raise Stop

    path = tmp_path / "state.pt"
    with pytest.raises(Stop):
        make(seed=7, on_step=interrupt)(y, A, save_state=path, save_every=2)
    resumed, rec = make(seed=7)(y, A, resume=path)
    assert torch.equal(resumed, full)
    assert rec.resumed_at == 3 and rec.nfe == rec_full.nfe
    # staged runs: stop_after, then resume
    path2 = tmp_path / "state2.pt"
    make(seed=7)(y, A, save_state=path2, stop_after=2)
    staged, _ = make(seed=7)(y, A, resume=path2)
    assert torch.equal(staged, full)


def test_resume_refuses_other_runs(tiny, tmp_path):
    prior, y, A = tiny
    path = tmp_path / "s.pt"
    _dds(prior, seed=1)(y, A, save_state=path, stop_after=1)
    with pytest.raises(InputDataError, match="another run"):
        _dds(prior, seed=2)(y, A, resume=path)
    with pytest.raises(InputDataError, match="different measurements"):
        _dds(prior, seed=1)(y * 2, A, resume=path)


def test_chunk_size_does_not_change_the_result(tiny):
    prior, y, A = tiny
    x1, _ = DiffusionMBIR(prior, steps=3, lam=0.01, rho=1.0, chunk_size=1, progress=False)(y, A)
    x2, _ = DiffusionMBIR(prior, steps=3, lam=0.01, rho=1.0, chunk_size=16, progress=False)(y, A)
    assert torch.allclose(x1, x2, atol=1e-5)


def test_on_step_and_record(tiny):
    prior, y, A = tiny
    seen = []
    x, rec = _dds(prior, on_step=lambda i, x, info: seen.append((i, tuple(x.shape), info["nfe"])))(y, A)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert all(s[1] == (4, 16, 16) for s in seen)
    assert rec.settings["lam"] == 0.05 and rec.method == "dds" and rec.seconds >= 0


@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
@pytest.mark.parametrize("axes", [("z",), "all"])
def test_communicator_and_data_weight_forms_of_admmtv(boundary, axes):
    """The one ADMM-TV: with a (single-rank) communicator it is the plain iteration, and a data weight
    w equals scaling the problem to ½‖√w A x − √w y‖² (the sharded form is in test_distributed)."""
    torch.manual_seed(0)
    vol = torch.rand(5, 8, 8, dtype=torch.float64)
    y, A = ct_problem(vol, 3)
    ax = (-3,) if axes != "all" else None
    plain = ADMMTV(y, A, lam=0.1, rho=2.0, axes=ax, boundary=boundary, cg_iter=3)
    local = ADMMTV(y, A, lam=0.1, rho=2.0, axes=ax, boundary=boundary, cg_iter=3, comm=LocalComm(5))
    w = 0.3
    weighted = ADMMTV(y, A, lam=0.1, rho=2.0, axes=ax, boundary=boundary, cg_iter=3, data_weight=w)
    scaled = ADMMTV(
        math.sqrt(w) * y, math.sqrt(w) * A, lam=0.1, rho=2.0, axes=ax, boundary=boundary, cg_iter=3
    )
    x1 = x2 = x3 = x4 = torch.zeros_like(vol)
    for _ in range(4):
        x1, x2, x3, x4 = plain.step(x1), local.step(x2), weighted.step(x3), scaled.step(x4)
    assert torch.allclose(x1, x2, rtol=1e-9, atol=1e-10)
    assert torch.allclose(x3, x4, rtol=1e-9, atol=1e-10)


def test_reference_backprojector_is_the_rescaled_exact_solver():
    prior = gaussian_prior(8)
    vol = gaussian_volume(prior, 4)
    y, A = ct_problem(vol.double(), 4)
    lam, rho = exact_equivalent(0.04, 10.0, 4)
    assert math.isclose(lam, 0.04 * 8 / math.pi) and math.isclose(rho, 10 * 8 / math.pi)
    a, _ = DDS(prior, steps=4, lam=lam, rho=rho, progress=False)(y, A)
    b, _ = DDS(prior, steps=4, lam=0.04, rho=10.0, backprojector="reference", progress=False)(y, A)
    assert torch.allclose(a, b, atol=1e-6)
    c, _ = DiffusionMBIR(prior, steps=4, lam=lam, rho=rho, final_consistency=True, progress=False)(y, A)
    d, _ = DiffusionMBIR(
        prior, steps=4, lam=0.04, rho=10.0, backprojector="reference", final_consistency=True, progress=False
    )(y, A)
    assert torch.allclose(c, d, atol=1e-5)


# ---------------------------------------------------------------- fail fast, before any network call
class _Exploding(torch.nn.Module):
    def forward(self, x, c):
        raise AssertionError("the network must not be called for bad input")


def _exploding_prior(n=16):
    return DiffusionPrior(_Exploding(), VPSchedule.linear(), image_shape=(1, n, n))


def test_nan_measurements_fail_before_work(tiny):
    _, y, A = tiny
    bad = y.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(InputDataError, match="NaN"):
        DDS(_exploding_prior(), progress=False)(bad, A)


def test_geometry_mismatch_fails_before_work(tiny):
    _, y, _ = tiny
    A8 = SliceWise(ParallelBeam2D((16, 16), sparse_angles(8)))
    with pytest.raises(InputDataError, match="do not match the operator"):
        DiffusionMBIR(_exploding_prior(), progress=False)(y, A8)


def test_prior_size_mismatch_fails_before_work(tiny):
    _, y, A = tiny
    with pytest.raises(InputDataError, match="trained on 32×32"):
        DDS(_exploding_prior(32), progress=False)(y, A)


def test_complex_domain_is_refused():
    from diffrecon.operators.coils import birdcage_maps
    from diffrecon.operators.mri import MultiCoilMRI
    from diffrecon.operators.sampling import uniform1d_mask

    m = uniform1d_mask((16, 16), 4, seed=0).mask
    A = SliceWise(MultiCoilMRI(birdcage_maps((2, 16, 16)), m))
    y = A(torch.rand(3, 16, 16))
    with pytest.raises(InputDataError, match="real_input=True"):
        DDS(_exploding_prior(), progress=False)(y, A)


def test_bad_hyperparameters():
    prior = _exploding_prior()
    with pytest.raises(InputDataError):
        DDS(prior, eta=1.5)
    with pytest.raises(InputDataError):
        DDS(prior, lam=-1)
    with pytest.raises(InputDataError):
        DiffusionMBIR(prior, tv_axes=("w",))
    with pytest.raises(InputDataError):
        DiffusionMBIR(prior, boundary="mirror")


class _BlockComm:
    """In-process stand-in for a rank of a sharded volume: neighbours' edges come from the whole array."""

    def __init__(self, full, lo, hi, world):
        self.full, self.lo, self.hi, self.world_size = full, lo, hi, world
        self.is_first, self.is_last = lo == 0, hi == full.shape[0]

    def sum(self, t):
        return t

    def edges(self, x, axis=0):
        n = self.full.shape[0]
        return self.full[(self.lo - 1) % n].unsqueeze(0), self.full[self.hi % n].unsqueeze(0)


@pytest.mark.parametrize("boundary", ["periodic", "neumann"])
def test_sharded_finite_difference_blocks_are_the_global_difference(boundary):
    """Each rank's block of the halo-exchanging difference (and of its adjoint) is that block of the
    single-process operator; the gloo run in test_distributed checks the collectives themselves."""
    from diffrecon.operators import FiniteDifference

    torch.manual_seed(0)
    x, y = torch.randn(7, 3, 2, dtype=torch.float64), torch.randn(7, 3, 2, dtype=torch.float64)
    glob = FiniteDifference(-3, boundary)
    bounds = [(0, 3), (3, 5), (5, 7)]
    fwd, adj = [], []
    for lo, hi in bounds:
        fwd.append(FiniteDifference(-3, boundary, comm=_BlockComm(x, lo, hi, 3)).forward(x[lo:hi]))
        adj.append(FiniteDifference(-3, boundary, comm=_BlockComm(y, lo, hi, 3)).adjoint(y[lo:hi]))
    assert torch.allclose(torch.cat(fwd), glob.forward(x), atol=1e-12)
    assert torch.allclose(torch.cat(adj), glob.adjoint(y), atol=1e-12)
