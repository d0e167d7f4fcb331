"""The problem layer: operators built without data, one simulation per modality, the MRI SNR definition,
and the demo's public solver settings."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from diffrecon.datasets.ct_simulation import ct_volume_operator, make_geometry, simulate_ct
from diffrecon.datasets.mri_simulation import simulate_mri
from diffrecon.errors import InputDataError
from diffrecon.recon.problems import (
    PROBLEMS,
    build_problem,
    ct_operator,
    ct_problem,
    mri_operator,
    mri_problem,
    problem_operator,
)


def _volume(shape=(5, 12, 10), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_simulate_ct_uses_the_geometry_operator(slice_axis):
    vol = _volume()
    plane = tuple(s for i, s in enumerate(vol.shape) if i != slice_axis)
    geom = make_geometry(plane, "parallel", 6)
    sim = simulate_ct(vol, geom, slice_axis=slice_axis)
    op = ct_volume_operator(geom, slice_axis)
    assert sim.noise_sigma == 0.0 and sim.operator.axis == slice_axis
    assert sim.operator.op2d.geometry.to_dict() == geom.to_dict()
    assert torch.equal(op(vol), sim.sinogram)
    # with noise: σ = noise · max|A x| and the seeded CPU generator's draw, exactly
    noisy = simulate_ct(vol, geom, slice_axis=slice_axis, noise=0.05, seed=3)
    clean = sim.sinogram
    sigma = 0.05 * float(clean.abs().max())
    assert noisy.noise_sigma == sigma
    expected = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(noisy.sinogram, expected)
    with pytest.raises(InputDataError, match="noise"):
        simulate_ct(vol, geom, slice_axis=slice_axis, noise=-1.0)


@pytest.mark.parametrize(
    "kw",
    [dict(n_views=4), dict(n_views=3, beam="fan"), dict(limited_angle_degrees=30.0)],
)
def test_ct_operator_is_the_operator_of_ct_problem(kw):
    vol = _volume((4, 10, 12))
    p = ct_problem(vol, slice_axis=1, **kw)
    op = ct_operator((4, 12), slice_axis=1, n_slices=10, **kw)
    assert op.op2d.geometry.to_dict() == p.info["geometry"] == p.operator.op2d.geometry.to_dict()
    assert op.axis == p.operator.axis == 1 and op.in_shape == (4, 10, 12)
    assert torch.equal(op(vol), p.y)
    assert p.n_views == op.op2d.geometry.n_angles
    # problem_operator takes the problem's own keyword arguments and ignores the noise ones
    via_params = problem_operator("ct", (4, 12), slice_axis=1, noise=0.1, seed=5, **kw)
    assert torch.equal(via_params(vol), p.y)


def test_mri_operator_is_the_operator_of_mri_problem():
    vol = _volume((3, 16, 12))
    kw = dict(acceleration=2.0, center_fraction=0.25, n_coils=4, seed=7)
    p = mri_problem(vol, slice_axis=0, **kw)
    op = mri_operator((16, 12), slice_axis=0, **kw)
    assert torch.equal(op.op2d.maps, p.operator.op2d.maps)
    assert torch.equal(op.op2d.mask, p.operator.op2d.mask)
    assert op.op2d.real_input and p.noise_sigma == 0.0 and p.info["snr_db"] is None
    assert p.info["acceleration"] == op.op2d.acceleration
    assert torch.equal(op(vol), p.y)
    via_params = problem_operator("mri", (16, 12), snr_db=10.0, **kw)
    assert torch.equal(via_params(vol), p.y)
    # a different seed is a different mask: the seed is part of the acquisition
    other = problem_operator("mri", (16, 12), **{**kw, "seed": 8})
    assert not torch.equal(other.op2d.mask, op.op2d.mask)


def _measured_snr(p, vol):
    """(SNR from σ, SNR from the noise actually added) under the documented definition."""
    inner = p.operator.op2d
    stack = vol.movedim(p.operator.axis, 0)
    # P: mean |F S_c x|² over slices, coils and the whole k-space grid = mean coil-image power (Parseval)
    coil_images = inner.maps.unsqueeze(0) * stack.unsqueeze(1)
    power = float((coil_images.abs() ** 2).mean())
    noise = (p.y - p.operator(vol))[..., inner.mask]  # sampled entries only; the rest is exactly zero
    assert bool((p.y[..., ~inner.mask] == 0).all())
    measured = float((noise.abs() ** 2).mean())
    return 10 * math.log10(power / p.noise_sigma**2), 10 * math.log10(power / measured)


@pytest.mark.parametrize("snr_db", [10.0, 25.0])
def test_mri_noise_has_the_documented_snr(snr_db):
    vol = _volume((32, 32, 4), seed=1)
    p = mri_problem(vol, acceleration=4.0, n_coils=8, snr_db=snr_db, seed=2, slice_axis=2)
    from_sigma, measured = _measured_snr(p, vol)
    assert from_sigma == pytest.approx(snr_db, abs=1e-3)
    assert measured == pytest.approx(snr_db, abs=0.3)  # ~8000 complex samples: ±1 % in power
    assert p.info["snr_db"] == snr_db
    # σ is the receiver's: it does not depend on the mask or the acceleration
    p2 = mri_problem(vol, acceleration=2.0, n_coils=8, snr_db=snr_db, seed=2, slice_axis=2)
    assert p2.noise_sigma == pytest.approx(p.noise_sigma, rel=1e-6)


def test_simulate_mri_same_seed_same_noise_and_input_errors():
    vol = _volume((2, 8, 8))
    op = mri_operator((8, 8), acceleration=2.0, center_fraction=0.25, n_coils=2)
    a, b = simulate_mri(vol, op, 20.0, seed=3), simulate_mri(vol, op, 20.0, seed=3)
    assert torch.equal(a.kspace, b.kspace) and a.noise_std == b.noise_std > 0
    assert not torch.equal(simulate_mri(vol, op, 20.0, seed=4).kspace, a.kspace)
    assert torch.equal(simulate_mri(vol, op, None).kspace, op(vol))
    with pytest.raises(InputDataError, match="snr_db"):
        simulate_mri(vol, op, float("inf"))
    with pytest.raises(InputDataError, match="MultiCoilMRI"):
        simulate_mri(vol, ct_operator((8, 8), 3), 20.0)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_registry_problems_use_their_builders(name):
    vol = _volume((2, 16, 16))
    p = build_problem(name, vol)
    assert p.name == name and p.truth is vol
    modality = "ct" if name.startswith("ct") else "mri"
    assert p.modality == modality
    assert p.operator.in_shape[1:] == (16, 16) and p.y.shape[0] == 2


def test_default_ct_presets_are_the_paper_values_times_the_documented_multipliers():
    """One default per method (library, CLI, demo): DDS ρ × 0.1 for sparse view and, at a limited angle,
    the per-slice data step with 30 CG steps (3-D z-TV when λ or ρ is given); DiffusionMBIR λ, ρ × m(N),
    predictor-only with a VP prior, the paper from 2000 steps."""
    from test_sampler_priors import gaussian_prior

    from diffrecon.recon import DDS, DiffusionMBIR
    from diffrecon.recon.defaults import (
        DDS_CT_RHO_MULT,
        DDS_LA_CG_ITER,
        DDS_LA_MODE,
        MBIR_WEIGHT_ANCHORS,
        mbir_weight_multiplier,
    )

    prior = gaussian_prior(8)
    for views in (8, 4):
        paper, default = DDS.paper_ct(prior, n_views=views), DDS.default_ct(prior, n_views=views)
        assert (default.lam, default.rho) == (paper.lam, paper.rho * DDS_CT_RHO_MULT)
        assert default.settings() | {"rho": paper.rho} == paper.settings()
        la_paper = DDS.paper_ct(prior, n_views=90, limited_angle=True)
        la = DDS.default_ct(prior, n_views=90, limited_angle=True)
        assert (la.mode, la.cg_iter) == (DDS_LA_MODE, DDS_LA_CG_ITER) == ("2d", 30)
        same = set(la.settings()) & set(la_paper.settings()) - {"mode", "cg_iter"}
        assert {k: la.settings()[k] for k in same} == {k: la_paper.settings()[k] for k in same}
        la_3d = DDS.default_ct(prior, n_views=90, limited_angle=True, lam=0.5)
        assert (la_3d.mode, la_3d.lam, la_3d.rho, la_3d.cg_iter) == ("3d", 0.5, la_paper.rho, 30)
        for steps in (3, 200, 400, 1000):
            m = mbir_weight_multiplier(steps)
            ref = DiffusionMBIR.paper_ct(prior, n_views=views)
            got = DiffusionMBIR.default_ct(prior, n_views=views, steps=steps)
            assert got.steps == steps and got.lam == pytest.approx(ref.lam * m)
            assert got.rho == pytest.approx(ref.rho * m)
        assert DiffusionMBIR.default_ct(prior, n_views=views).settings() == ref.settings()  # 2000 = paper
    # the anchors are hit exactly, m grows with N and is 1 from the paper's 2000 steps on
    for n, m in MBIR_WEIGHT_ANCHORS:
        assert mbir_weight_multiplier(n) == pytest.approx(m)
    ms = [mbir_weight_multiplier(n) for n in (1, 10, 100, 300, 700, 1500, 2000, 10**5)]
    assert ms == sorted(ms) and ms[-2:] == [1.0, 1.0] and ms[0] > 0
    with pytest.raises(InputDataError):
        mbir_weight_multiplier(0)
    # overrides win over the preset
    assert DDS.default_ct(prior, n_views=8, rho=1.0, steps=7).rho == 1.0
    assert DiffusionMBIR.default_ct(prior, n_views=8, steps=400, n_corrector=1).n_corrector == 1


def test_default_ct_runs_a_vp_prior_predictor_only_below_the_paper_step_count():
    from diffrecon.priors import load
    from diffrecon.recon import DiffusionMBIR

    prior = load("head-64")  # VP
    short = DiffusionMBIR.default_ct(prior, n_views=8, steps=400)
    assert (short.n_corrector, short.vp_variance) == (0, "posterior")
    paper = DiffusionMBIR.default_ct(prior, n_views=8)
    assert (paper.steps, paper.n_corrector, paper.vp_variance) == (2000, 1, "beta")


def test_demo_is_a_library_module():
    """diffrecon.demo imports no CLI module; Timer and peak_rss_mb live in diffrecon._runtime."""
    code = (
        "import sys, diffrecon.demo, diffrecon._runtime as r; "
        "assert not [m for m in sys.modules if m.startswith('diffrecon.commands')], sys.modules; "
        "from diffrecon.commands import _common as c; "
        "assert c.Timer is r.Timer and c.peak_rss_mb is r.peak_rss_mb"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from diffrecon._runtime import Timer, peak_rss_mb

    with Timer() as t:
        pass
    assert t.seconds >= 0 and peak_rss_mb() > 0
