"""DiffPIR and DDRM on the solver skeleton: update rules against hand-derived formulas on an analytic
Gaussian prior (exact Tweedie), exact NFE counts, seeding, save/resume, the 3-D z-TV versions, presets
and refused settings. (The comparison against deepinv's samplers is run outside the repository.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_sampler_priors import ct_problem, gaussian_prior, gaussian_volume

from diffrecon.errors import InputDataError
from diffrecon.operators import Mask, ParallelBeam2D, SliceWise, sparse_angles
from diffrecon.recon.classical import cg
from diffrecon.recon.diffusion import DDRM, DiffPIR, slice_svd
from diffrecon.recon.diffusion.diffpir import PAPER_TASKS, quad_timesteps
from diffrecon.recon.problems import PROBLEMS, build_problem

N = 8  # slices are N × N


@pytest.fixture(scope="module")
def gauss():
    prior = gaussian_prior(N)
    vol = gaussian_volume(prior, 4, seed=1)
    y, A = ct_problem(vol, 3)
    return prior, vol, y, A


def mse(a, b):
    return float(((a - b) ** 2).mean())


def z_tv(x):
    return float((x[1:] - x[:-1]).abs().sum())


def dense_matrix(op2d, n=N):
    """The 2-D operator as a float64 matrix (rows: flattened measurements, columns: pixels)."""
    cols = [op2d(e.view(n, n)).flatten() for e in torch.eye(n * n, dtype=torch.float64)]
    return torch.stack(cols, 1)


def first_step(solver, y, A):
    """(ctx, state before, state after) of step 0, through the skeleton's own hooks."""
    axis, shape = solver.validate(y, A)
    ctx = solver._context(y, A, axis, shape, None, None)
    state = solver.init_state(ctx)
    return ctx, state, solver.step(0, state, ctx)


def replica_noise(seed, count, shape, dtype=torch.float64):
    """The first ``count`` draws of a solver's generator (``randn(ctx)`` on one process)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(count)]


# ------------------------------------------------------------------------------------------------
# DiffPIR
# ------------------------------------------------------------------------------------------------
def test_quad_grid_is_the_papers():
    ts = quad_timesteps(100, 1000)
    k = [int(v) for v in np.sqrt(np.linspace(0, 1000**2, 100))]
    k[-1] -= 1
    assert ts.tolist() == [999 - v for v in k]
    assert ts[0] == 999 and ts[-1] == 0 and ts[1] == 899 and len(ts) == 100
    assert quad_timesteps(3, 1000).tolist() == [999, 292, 0]
    with pytest.raises(InputDataError, match="steps >= 2"):
        quad_timesteps(1, 1000)


@pytest.mark.parametrize("solver_kind", ["svd", "cg"])
def test_diffpir_one_step_matches_hand_computation(gauss, solver_kind):
    prior, vol, y, A = gauss
    y = y.double()
    lam, zeta, sigma_n, seed = 7.0, 0.3, 0.05, 3
    cg_iter = 5 if solver_kind == "svd" else 300
    solver = DiffPIR(prior, steps=10, lam=lam, zeta=zeta, sigma_n=sigma_n, seed=seed, data_solver=solver_kind,
                     cg_iter=cg_iter, progress=False)
    ctx, s0, s1 = first_step(solver, y, A)
    t0, t1 = (float(v) for v in ctx.timesteps[:2])
    xi0, xi1 = replica_noise(seed, 2, (4, 1, N, N))
    a0, sd0 = (float(v) for v in prior.schedule.alpha_sigma(t0))
    a1, sd1 = (float(v) for v in prior.schedule.alpha_sigma(t1))
    x_T = math.sqrt(a0**2 + sd0**2) * xi0
    assert torch.allclose(s0.x_t, x_T, atol=1e-12)
    z0 = prior.predict(x_T, torch.full((4,), t0).round().long())[0].clamp(-1, 1)
    x0 = (z0.squeeze(1) + 1) / 2
    rho = lam * sigma_n**2 / (sd0 / a0) ** 2
    H = dense_matrix(A.op2d)
    M = H.T @ H + rho * torch.eye(N * N, dtype=torch.float64)
    rhs = torch.stack([H.T @ yk.flatten() for yk in y]) + rho * x0.flatten(1)
    x0p = torch.linalg.solve(M, rhs.T).T.view(4, N, N)
    assert torch.allclose(s1.x0, x0p, atol=1e-6)  # the data step: (AᵀA + ρ_t I)x = Aᵀy + ρ_t x̂0
    z0p = (2 * x0p - 1).unsqueeze(1)
    eps = (x_T - a0 * z0p) / sd0  # the effective noise of the corrected estimate
    expect = a1 * z0p + sd1 * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * xi1)
    assert torch.allclose(s1.x_t, expect, atol=1e-5)


def test_diffpir_mask_closed_form_and_adjoint_init():
    prior = gaussian_prior(N)
    vol = gaussian_volume(prior, 2, seed=2).double()
    m = torch.rand(N, N, generator=torch.Generator().manual_seed(1)) < 0.5
    A = SliceWise(Mask(m))
    y = A(vol)
    solver = DiffPIR.deepinv(prior, steps=4, seed=5, progress=False)
    assert solver.data_solver == "auto"
    ctx, s0, s1 = first_step(solver, y, A)
    assert solver._kind == "svd"  # a Mask has its closed form
    (xi0,) = replica_noise(5, 1, (2, 1, N, N))
    a0, sd0 = (float(v) for v in prior.schedule.alpha_sigma(999))
    spread = math.sqrt((sd0 / a0) ** 2 - (2 * 0.05) ** 2)  # deepinv: √(σ̄_T² − (2σ)²)
    assert torch.allclose(s0.x_t, a0 * ((2 * y - 1).unsqueeze(1) + spread * xi0), atol=1e-12)
    z0 = prior.predict(s0.x_t, torch.full((2,), 999))[0].clamp(-1, 1)
    x0 = (z0.squeeze(1) + 1) / 2
    rho = 14.0 * 0.05**2 / (sd0 / a0) ** 2  # deepinv's λ = 7 with its γ = 1/(2ρ_t)
    mf = m.double()
    assert torch.allclose(s1.x0, (mf * y + rho * x0) / (mf + rho), atol=1e-10)


def test_diffpir_output_is_the_iterate_at_t0(gauss, tmp_path):
    prior, vol, y, A = gauss
    x, rec = DiffPIR(prior, steps=3, sigma_n=0.01, seed=1, progress=False)(y, A)
    state = tmp_path / "s.pt"
    DiffPIR(prior, steps=3, sigma_n=0.01, seed=1, progress=False)(y, A, save_state=state, stop_after=2)
    x_t = torch.load(state, weights_only=True)["state"]["x_t"]
    assert torch.equal(x, prior.decode(x_t).squeeze(1))  # decode(x_0): the released code's result
    xt, _ = DiffPIR(prior, steps=3, sigma_n=0.01, seed=1, output="tweedie", progress=False)(y, A)
    assert not torch.equal(x, xt) and torch.isfinite(xt).all()


def test_diffpir_reconstructs(gauss):
    prior, vol, y, A = gauss
    x, rec = DiffPIR(prior, steps=30, zeta=0.0, sigma_n=0.01, progress=False)(y, A)
    assert rec.nfe == 30 and mse(x, vol) < 0.2 * mse(torch.full_like(vol, 0.5), vol)


# ------------------------------------------------------------------------------------------------
# DDRM
# ------------------------------------------------------------------------------------------------
def test_slice_svd_of_ct_is_exact():
    op = ParallelBeam2D((N, N), sparse_angles(3))
    svd = slice_svd(op)
    H = dense_matrix(op)
    V, s = svd.V, svd.s.flatten()
    assert torch.allclose(V.T @ V, torch.eye(N * N, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(V.T @ (H.T @ H) @ V, torch.diag(s**2), atol=1e-8)
    assert int((s > 0).sum()) == int(torch.linalg.matrix_rank(H))
    x = torch.rand(2, N, N, dtype=torch.float64)
    ybar = svd.y_over_s(op.adjoint(op(x)))  # noiseless data: ȳ/s = Vᵀx on observed coordinates
    assert torch.allclose(ybar, torch.where(svd.s > 0, svd.vt(x), torch.zeros(())), atol=1e-8)
    assert slice_svd(op).V is V  # cached per operator
    m = Mask(torch.tensor([[1.0, 0.0], [0.5, 0.0]]))
    d = slice_svd(m)
    assert d.kind == "diagonal" and d.V is None and d.s.tolist() == [[1.0, 0.0], [0.5, 0.0]]


def test_ddrm_mask_one_step_matches_hand_computation():
    """All three cases of the spectral rule on a diagonal SVD (weights 0, 0.02, 1): s = 0, σ′ < σ_y/s and
    σ′ ≥ σ_y/s."""
    prior = gaussian_prior(N)
    vol = gaussian_volume(prior, 2, seed=3).double()
    g = torch.Generator().manual_seed(4)
    m = torch.tensor([0.0, 0.02, 1.0])[torch.randint(0, 3, (N, N), generator=g)]
    A = SliceWise(Mask(m))
    sy, eta, eta_b, seed = 0.05, 0.7, 0.8, 9
    y = A(vol) + sy * m * torch.randn(vol.shape, generator=g, dtype=torch.float64)
    solver = DDRM(prior, steps=3, eta=eta, eta_b=eta_b, sigma_y=sy, seed=seed, progress=False)
    ctx, s0, s1 = first_step(solver, y, A)
    assert ctx.timesteps.tolist() == [666, 333, 0]
    sig = [float(v) / 2 for v in prior.schedule.noise_to_signal(ctx.timesteps)]  # data units: σ̄/2
    xi0, xi1 = (v.squeeze(1) for v in replica_noise(seed, 2, (2, 1, N, N)))
    s = m.double()
    obs = s > 0
    ss = torch.where(obs, s, torch.ones_like(s))
    ybar = torch.where(obs, y / ss, torch.zeros_like(y))
    large = obs & (s * sig[0] > sy)
    std = torch.where(large, (sig[0] ** 2 - (sy / ss) ** 2).clamp_min(0).sqrt(), torch.full_like(s, sig[0]))
    u0 = torch.where(large, ybar, torch.full_like(y, 0.5)) + std * xi0  # 0.5 = the model-space zero
    assert torch.allclose(s0.u, u0, atol=1e-12)
    z0 = prior.predict(float(prior.schedule.alpha_sigma(666)[0]) * (2 * u0 - 1).unsqueeze(1),
                       torch.full((2,), 666))[0]
    x0 = (z0.squeeze(1) + 1) / 2
    e = (u0 - x0) / sig[0]
    c, sp = math.sqrt(1 - eta**2), sig[1]
    after = obs & (s * sp < sy)
    assert bool(after.any()) and bool((obs & ~after).any()) and bool((~obs).any())
    null = x0 + c * sp * e + eta * sp * xi1
    v_after = x0 + c * sp * (ybar - x0) / (sy / ss) + eta * sp * xi1
    v_before = eta_b * ybar + (1 - eta_b) * x0 + (sp**2 - (eta_b * sy / ss) ** 2).clamp_min(0).sqrt() * xi1
    expect = torch.where(obs & ~after, v_before, torch.where(after, v_after, null))
    assert torch.allclose(s1.x0, x0, atol=1e-12) and torch.allclose(s1.u, expect, atol=1e-10)


def test_ddrm_dense_svd_update_equals_the_closed_form(gauss, monkeypatch):
    """On CT, the noise-free part of one DDRM update is a spectral filter of (x̂0, ε̂, y): compare it with
    the same filter built from numpy's SVD of the dense system matrix (basis-independent)."""
    prior, vol, y, A = gauss
    y = y.double()
    sy, eta, eta_b = 0.3, 0.85, 0.9
    solver = DDRM(prior, steps=4, eta=eta, eta_b=eta_b, sigma_y=sy, progress=False)
    monkeypatch.setattr(solver, "randn", lambda ctx: torch.zeros((4, 1, N, N), dtype=ctx.dtype))
    ctx, s0, s1 = first_step(solver, y, A)
    sig = [float(v) / 2 for v in prior.schedule.noise_to_signal(ctx.timesteps)]
    H = dense_matrix(A.op2d).numpy()
    U, s, Vt = np.linalg.svd(H)
    r = int((s > 1e-5 * s[0]).sum())
    U, s, Vr, Vn = U[:, :r], s[:r], Vt[:r].T, Vt[r:].T
    u0 = s0.u.flatten(1).numpy().T
    x0 = s1.x0.flatten(1).numpy().T
    e = (u0 - x0) / sig[0]
    yb = U.T @ y.flatten(1).numpy().T  # ȳ
    sp, c = sig[1], math.sqrt(1 - eta**2)
    v0 = Vr.T @ x0
    after = (s * sp < sy)[:, None]
    rng = np.where(after, v0 + c * sp * (yb / s[:, None] - v0) * s[:, None] / sy,
                   eta_b * yb / s[:, None] + (1 - eta_b) * v0)
    expect = Vr @ rng + Vn @ (Vn.T @ (x0 + c * sp * e))
    assert after.any() and (~after).any()
    assert np.allclose(s1.u.flatten(1).numpy().T, expect, atol=1e-8)


def test_ddrm_levels_of_both_conventions():
    prior = gaussian_prior(N)
    t, sig = DDRM(prior, steps=20, progress=False).levels()
    assert t.tolist() == list(range(950, -1, -50))
    assert torch.allclose(sig, prior.schedule.noise_to_signal(t) / 2)
    t, sig = DDRM.deepinv(prior, steps=5, progress=False).levels()
    assert torch.allclose(sig, torch.linspace(1, 0, 5, dtype=torch.float64))
    nsr = prior.schedule.noise_to_signal(torch.arange(1000))
    assert t.tolist() == [int(torch.argmin((nsr - 2 * v).abs())) for v in sig]  # nearest level
    assert t[-1] == 0


def test_ddrm_reconstructs_ct_and_inpainting(gauss):
    prior, vol, y, A = gauss
    ls = cg(y, A, n_iter=100)
    x, rec = DDRM.paper(prior, progress=False)(y, A)
    assert rec.nfe == 20 and mse(x, vol) < mse(ls, vol)
    m = torch.rand(N, N, generator=torch.Generator().manual_seed(0)) < 0.5
    B = SliceWise(Mask(m))
    xb, _ = DDRM.deepinv(prior, steps=30, sigma_y=0.0, progress=False)(B(vol), B)
    assert mse(xb, vol) < 0.3 * mse(B(vol), vol)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_both_run_on_every_problem(name):
    prior = gaussian_prior(N)
    p = build_problem(name, gaussian_volume(prior, 2).clamp(0, 1))
    for solver in (DiffPIR(prior, steps=2, sigma_n=0.01, progress=False),
                   DDRM(prior, steps=2, progress=False)):
        x, rec = solver(p.y, p.operator)
        assert x.shape == p.truth.shape and torch.isfinite(x).all() and rec.nfe == 2


# ------------------------------------------------------------------------------------------------
# shared mechanics
# ------------------------------------------------------------------------------------------------
SOLVERS = {
    "diffpir": lambda prior, **k: DiffPIR(prior, steps=5, sigma_n=0.01, progress=False, **k),
    "diffpir3d": lambda prior, **k: DiffPIR(prior, steps=5, sigma_n=0.01, mode="3d", tv_lam=0.02,
                                            tv_rho=1.0, progress=False, **k),
    "ddrm": lambda prior, **k: DDRM(prior, steps=5, progress=False, **k),
    "ddrm3d": lambda prior, **k: DDRM(prior, steps=5, mode="3d", progress=False, **k),
    "ddrm_deepinv": lambda prior, **k: DDRM.deepinv(prior, steps=5, progress=False, **k),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_exact_nfe_seeds_and_resume(gauss, name, tmp_path):
    prior, vol, y, A = gauss
    make = SOLVERS[name]
    calls = prior.nfe
    x, rec = make(prior, chunk_size=3)(y, A)  # 4 slices in chunks of 3: two network calls per step
    assert rec.nfe == 5 and rec.slice_evaluations == 20 and prior.nfe - calls == 10
    assert rec.method == name.split("3d")[0].split("_")[0]
    x2, _ = make(prior)(y, A)
    assert torch.allclose(x, x2, atol=1e-5)  # chunking does not change the result
    assert torch.equal(make(prior)(y, A)[0], x2)  # same seed, same result
    assert not torch.equal(make(prior, seed=1)(y, A)[0], x2)
    state = tmp_path / "state.pt"
    make(prior)(y, A, save_state=state, stop_after=2)
    x3, rec3 = make(prior)(y, A, resume=state)
    assert rec3.resumed_at == 2 and rec3.nfe == 5 and torch.equal(x3, x2)  # bit-identical
    with pytest.raises(InputDataError, match="another run"):
        make(prior, seed=7)(y, A, resume=state)


def test_3d_versions_reduce_the_z_tv(gauss):
    prior, vol, y, A = gauss
    x2, _ = DiffPIR(prior, steps=10, sigma_n=0.01, progress=False)(y, A)
    x3, rec = DiffPIR(prior, steps=10, sigma_n=0.01, mode="3d", tv_lam=0.05, tv_rho=1.0, progress=False)(y, A)
    assert rec.settings["mode"] == "3d" and rec.settings["tv_axes"] == [-3]
    assert z_tv(x3) < 0.9 * z_tv(x2)
    d2, _ = DDRM(prior, steps=10, progress=False)(y, A)
    d3, rec = DDRM(prior, steps=10, mode="3d", tv_lam=0.05, progress=False)(y, A)
    assert rec.settings["tv_lam"] == 0.05 and z_tv(d3) < 0.9 * z_tv(d2)
    assert torch.isfinite(x3).all() and torch.isfinite(d3).all()


def test_proximal_admm_tv_converges_to_its_minimiser():
    """With a huge λ the minimiser of ½‖x − y‖² + (w/2)‖x − a‖² + λ‖D_z x‖₁ is constant along z."""
    from diffrecon.operators import Identity
    from diffrecon.recon.diffusion import ProximalADMMTV

    g = torch.Generator().manual_seed(0)
    y, a = torch.rand(4, 3, 3, generator=g, dtype=torch.float64), torch.rand(4, 3, 3, generator=g,
                                                                            dtype=torch.float64)
    w = 0.5
    admm = ProximalADMMTV(y, Identity((4, 3, 3)), lam=50.0, rho=1.0, axes=(-3,), cg_iter=10)
    x = a.clone()
    for _ in range(400):
        x = admm.prox_step(x, a, w)
    expect = ((y + w * a) / (1 + w)).mean(0, keepdim=True).expand_as(x)
    assert torch.allclose(x, expect, atol=1e-4)
    free = ProximalADMMTV(y, Identity((4, 3, 3)), lam=50.0, rho=1.0, axes=(-3,), cg_iter=10, data=False)
    x = a.clone()
    for _ in range(400):
        x = free.prox_step(x, a, w)
    assert torch.allclose(x, a.mean(0, keepdim=True).expand_as(x), atol=1e-4)


def test_presets():
    prior = gaussian_prior(N)
    d = DiffPIR.paper(prior)
    assert (d.steps, d.lam, d.zeta, d.skip, d.init, d.sigma_floor, d.clip_x0) == (100, 7.0, 0.3, "quad",
                                                                                   "noise", 1e-3, True)
    i = DiffPIR.paper(prior, task="inpaint", sigma_n=0.0)
    assert (i.steps, i.lam, i.zeta) == (20, 1.0, 1.0) and set(PAPER_TASKS) == {"deblur", "inpaint"}
    j = DiffPIR.deepinv(prior)
    got = (j.steps, j.lam, j.zeta, j.sigma_n, j.sigma_floor, j.init, j.cg_iter)
    assert got == (100, 14.0, 0.1, 0.05, 0.0, "adjoint", 50)
    r = DDRM.paper(prior)
    assert (r.steps, r.eta, r.eta_b, r.convention, r.noise_scale) == (20, 0.85, 1.0, "paper", 1.0)
    q = DDRM.deepinv(prior, sigma_y=0.1)
    assert (q.steps, q.sigma_y, q.convention, q.sigma_max) == (100, 0.1, "deepinv", 1.0)
    assert q.noise_scale == pytest.approx(2**-0.5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: DiffPIR(p, zeta=1.5), "zeta"),
        (lambda p: DiffPIR(p, lam=0.0), "lam > 0"),
        (lambda p: DiffPIR(p, sigma_n=0.0, sigma_floor=0.0), "sigma_n = 0"),
        (lambda p: DiffPIR(p, skip="linear"), "skip must be"),
        (lambda p: DiffPIR(p, steps=1), "steps >= 2"),
        (lambda p: DiffPIR(p, mode="3d", data_solver="svd"), "data_solver='cg'"),
        (lambda p: DiffPIR(p, mode="3d", tv_lam=-1.0), "lam > 0"),
        (lambda p: DiffPIR.paper(p, task="sr"), "task must be"),
        (lambda p: DiffPIR(gaussian_prior(N, "ve")), "discrete schedule"),
        (lambda p: DDRM(p, eta=1.5), "eta"),
        (lambda p: DDRM(p, eta_b=-0.1), "eta_b"),
        (lambda p: DDRM(p, sigma_y=-1.0), "sigma_y"),
        (lambda p: DDRM(p, convention="ddnm"), "convention"),
        (lambda p: DDRM(p, steps=2000), "only 1000"),
        (lambda p: DDRM(p, sv_rcond=1.0), "sv_rcond"),
    ],
)
def test_bad_settings_are_refused(make, match):
    with pytest.raises(InputDataError, match=match):
        make(gaussian_prior(N))


def test_bad_operators_are_refused(gauss):
    prior, vol, y, A = gauss
    with pytest.raises(InputDataError, match="max_svd_pixels=16"):
        DDRM(prior, steps=2, max_svd_pixels=16, progress=False)(y, A)  # 8×8 = 64 pixels > 16
    with pytest.raises(InputDataError, match="max_svd_pixels"):
        DiffPIR(prior, steps=2, data_solver="svd", max_svd_pixels=16, progress=False)(y, A)
    from diffrecon.operators import Identity

    vol_op = Identity((4, N, N))  # a volume operator that is not SliceWise
    with pytest.raises(InputDataError, match="SliceWise"):
        DDRM(prior, steps=2, progress=False)(vol, vol_op)
    with pytest.raises(InputDataError, match="prior was trained on 8×8"):
        DDRM(prior, steps=2, progress=False)(torch.zeros(2, 4, 4), SliceWise(Mask(torch.ones(4, 4))))
    x, _ = DiffPIR(prior, steps=2, sigma_n=0.01, progress=False)(vol, vol_op)  # CG works on any operator
    assert x.shape == vol.shape
