"""DDS2M: a tiny run improves PSNR, schedule/defaults, oracle labelling, seeding, bad input; the
shared result contract (Reconstruction / SolveRecord), the on_step(i, x, info) callback, and the
shared schedule and finite differences reproducing the former private ones exactly."""

import json
import math

import pytest
import torch

from diffrecon.errors import InputDataError
from diffrecon.metrics import mpsnr_tensor
from diffrecon.operators.hsi import Inpainting, SpatialSR, random_voxel_mask
from diffrecon.operators.noise import add_gaussian_noise
from diffrecon.priors.networks.vs2m import LITE, VS2M, usable_depth
from diffrecon.priors.schedule import VPSchedule
from diffrecon.recon.dds2m import DDS2M, TASK_DEFAULTS, DDS2MResult
from diffrecon.recon.diffusion.records import Reconstruction, SolveRecord

TINY = dict(
    network=LITE.replace(
        channels=(8, 16, 16),
        skip_channels=(0, 4, 4),
        kernels=(3, 3, 3),
        attention_levels=(),
        mlp_hidden=(32, 32),
    ),
    rank=3,
    lr=1e-2,
    progress=False,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _cube(h=24, w=20, b=6, seed=0):
    """Smooth low-rank test cube in [0.1, 0.9]: 3 smooth maps × 3 smooth spectra."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    maps = torch.stack([torch.sin(3 * yy + 1) ** 2, torch.cos(2 * xx + yy) ** 2, (xx * yy)], 0)
    wl = torch.linspace(0, 1, b)
    spec = torch.stack([0.5 + 0.4 * torch.sin(4 * wl), wl, 1 - wl**2], 0) * (
        0.5 + torch.rand(3, 1, generator=g)
    )
    c = torch.einsum("rhw,rb->hwb", maps, spec)
    return 0.1 + 0.8 * (c - c.min()) / (c.max() - c.min())


def _abar(task):
    return DDS2M(task).schedule().alphas_cumprod


def test_paper_schedule_and_defaults():
    a = _abar("denoise")
    assert a.shape == (2000,) and a.dtype == torch.float64
    assert float(a[-1]) == pytest.approx(0.006, rel=0.05)  # ᾱ_T of the denoising config
    assert float(_abar("inpaint")[-1]) == pytest.approx(0.0005, rel=0.1)
    assert float(_abar("sr")[-1]) == pytest.approx(0.078, rel=0.05)
    assert TASK_DEFAULTS["denoise"] == {
        "num_steps": 2000,
        "start_point": 1000,
        "eta": 1.0,
        "eta_b": 1.0,
        "sv_cutoff": 0.0,
    }
    assert TASK_DEFAULTS["inpaint"]["num_steps"] == 3000 and TASK_DEFAULTS["inpaint"]["eta"] == 0.95
    assert TASK_DEFAULTS["sr"]["start_point"] == 500 and TASK_DEFAULTS["sr"]["sv_cutoff"] == 3e-2


def test_vs2m_shapes_nonsquare_any_bands():
    for h, w, b in [(24, 20, 1), (17, 40, 7), (32, 32, 31)]:
        net = VS2M(h, w, b, config=LITE, rank=2)
        out = net()
        assert out.shape == (h, w, b)
        s, e = net.factors()
        assert s.shape == (2, h, w) and e.shape == (2, b)
        torch.testing.assert_close(out, torch.einsum("rhw,rb->hwb", s, e))
    assert usable_depth(256, 256, 6) == 6 and usable_depth(64, 64, 6) == 4 and usable_depth(8, 30, 6) == 1


def test_vs2m_upsample_modes():
    """upsample="nearest" changes the decoder only (same parameters, different maps); others raise."""
    g = torch.Generator
    bil = VS2M(20, 16, 3, config=LITE, rank=2, generator=g().manual_seed(0))
    near = VS2M(20, 16, 3, config=LITE, rank=2, upsample="nearest", generator=g().manual_seed(0))
    near.load_state_dict(bil.state_dict())
    assert near.config.upsample == "nearest" and near().shape == (20, 16, 3)
    assert not torch.allclose(bil.spatial(), near.spatial())
    with pytest.raises(InputDataError, match="upsample"):
        VS2M(20, 16, 3, config=LITE, rank=2, upsample="bicubic")


def test_vs2m_groups_are_independent_nets():
    """Grouped convolutions must not mix the R spatial nets: the gradient of map 0 w.r.t. the
    parameters of group 1 is zero."""
    net = VS2M(16, 16, 4, config=TINY["network"], rank=2)
    s = net.spatial()
    conv = net.body.down[0].conv
    (g,) = torch.autograd.grad(s[0].sum(), conv.weight)
    half = g.shape[0] // 2
    assert float(g[half:].abs().max()) == 0.0 and float(g[:half].abs().max()) > 0


def test_tiny_denoising_improves_psnr():
    clean = _cube()
    noisy = add_gaussian_noise(clean, 0.1, seed=1)
    res = DDS2M("denoise", num_steps=120, start_point=40, **TINY).restore(noisy, sigma=0.1)
    before = float(mpsnr_tensor(noisy.clamp(0, 1), clean))
    after = float(mpsnr_tensor(res.image, clean))
    assert after > before + 3.0, (before, after)
    assert res.image.shape == clean.shape and res.oracle_image is None
    rec = res.record
    assert rec.nfe == 81 and rec.extra["output"] == "final iterate" and rec.extra["sigma"] == 0.1
    assert not rec.extra["sigma_estimated"]


def test_seeded_reproducible_and_oracle_labelled():
    clean = _cube(16, 16, 3)
    noisy = add_gaussian_noise(clean, 0.1, seed=2)
    kw = dict(num_steps=30, start_point=20, **TINY)
    r1 = DDS2M("denoise", **kw).restore(noisy, sigma=0.1, ground_truth=clean)
    r2 = DDS2M("denoise", **kw).restore(noisy, sigma=0.1)
    torch.testing.assert_close(r1.image, r2.image)  # ground truth does not change the output
    assert r1.oracle_image is not None and "ORACLE" in r1.record.extra["oracle"]["note"]
    assert len(r1.history) == 11 and r1.oracle_mpsnr == pytest.approx(max(r1.history))
    assert 20 <= r1.oracle_step <= 30
    assert r1.record.extra["oracle"]["mpsnr"] == r1.oracle_mpsnr
    assert r1.record.extra["oracle"]["step"] == r1.oracle_step
    assert "oracle" not in r2.record.extra and r2.oracle_mpsnr is None and r2.history == []
    # the oracle MPSNR is the metrics module's (float32 on the device) of the oracle image
    assert r1.oracle_mpsnr == float(mpsnr_tensor(r1.oracle_image, clean, mse_floor=1e-20))
    r3 = DDS2M("denoise", seed=7, **kw).restore(noisy, sigma=0.1)
    assert not torch.equal(r1.image, r3.image)


def test_estimated_sigma_and_progress_callback():
    clean = _cube(16, 24, 4)
    noisy = add_gaussian_noise(clean, 0.1, seed=3)
    seen = []
    res = DDS2M(
        "denoise",
        num_steps=12,
        start_point=10,
        on_step=lambda i, x, info: seen.append((i + 1, info["t"])),  # i + 1: the loop iteration
        **TINY,
    ).restore(noisy)
    assert res.record.extra["sigma_estimated"] and 0.07 < res.record.extra["sigma"] < 0.14
    assert seen == [(10, 2), (11, 1), (12, 0)]


def test_on_step_shared_signature():
    """on_step(i, x, info): i the 0-based step index, x the clean estimate (H, W, B) in [0, 1] data
    units, info["t"] = T − 1 − i, info["nfe"] cumulative over the chains (ends at record.nfe),
    info["chain"] the chain index; called on the VS2M steps only (i ≥ start_point − 1)."""
    clean = _cube(16, 16, 4)
    noisy = add_gaussian_noise(clean, 0.1, seed=6)
    calls = []

    def on_step(i, x, info):
        assert isinstance(i, int) and isinstance(info, dict) and {"t", "nfe", "chain"} <= set(info)
        assert x.shape == clean.shape and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        calls.append((i, info["t"], info["nfe"], info["chain"], x.clone()))

    res = DDS2M(
        "denoise", num_steps=8, start_point=6, updates_per_step=2, samples=2, on_step=on_step, **TINY
    ).restore(noisy, sigma=0.1, ground_truth=clean)
    assert [(i, t, n, c) for i, t, n, c, _ in calls] == [
        (5, 2, 2, 0), (6, 1, 4, 0), (7, 0, 6, 0),
        (5, 2, 8, 1), (6, 1, 10, 1), (7, 0, 12, 1),
    ]
    assert calls[-1][2] == res.record.nfe == 12
    # x is the estimate the oracle scores: the per-update history is its MPSNR (chain of the oracle)
    best = res.record.extra["oracle"]["chain"]
    xs = [x for _, _, _, c, x in calls if c == best]
    assert res.history == [float(mpsnr_tensor(x, clean, mse_floor=1e-20)) for x in xs]


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_tiny_inpaint_and_sr_run(task):
    """Short chains only check the plumbing (shapes, finiteness, data fidelity on observed voxels);
    the quality claims are measured by benchmarks/hsi_restoration.py with the paper's step counts."""
    clean = _cube(24, 16, 5)
    if task == "inpaint":
        op = Inpainting(random_voxel_mask(clean.shape, 0.3, seed=1))
        y = op(add_gaussian_noise(clean, 0.1, seed=4))
    else:
        op = SpatialSR(tuple(clean.shape), 2)
        y = add_gaussian_noise(op(clean), 0.1, seed=4)
    res = DDS2M(task, num_steps=60, start_point=30, **TINY).restore(y, op, sigma=0.1)
    assert res.image.shape == clean.shape and bool(torch.isfinite(res.image).all())
    assert 0.0 <= float(res.image.min()) and float(res.image.max()) <= 1.0
    assert res.record.extra["operator"] == type(op).__name__ and res.record.nfe == 31
    if task == "inpaint":  # better than the zero-filled measurement
        assert float(mpsnr_tensor(res.image, clean)) > float(mpsnr_tensor(y, clean)) + 3


def test_bad_inputs():
    clean = _cube(16, 16, 3)
    m = DDS2M("denoise", num_steps=4, start_point=3, **TINY)
    bad = clean.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputDataError, match="NaN"):
        m.restore(bad, sigma=0.1)
    with pytest.raises(InputDataError, match=r"\(H, W, B\)"):
        m.restore(clean[..., 0], sigma=0.1)
    for s in (0.0, -0.1, math.nan):
        with pytest.raises(InputDataError, match="sigma"):
            m.restore(clean, sigma=s)
    with pytest.raises(InputDataError, match="observes no voxel"):
        Inpainting(torch.zeros(16, 16, 3, dtype=torch.bool))
    op = Inpainting(random_voxel_mask((16, 16, 3), 0.2))
    with pytest.raises(InputDataError, match="cannot be estimated"):
        DDS2M("inpaint", num_steps=4, start_point=3, **TINY).restore(op(clean), op)
    with pytest.raises(InputDataError, match="operator produces"):
        m.restore(clean, SpatialSR((16, 16, 3), 2), sigma=0.1)
    with pytest.raises(InputDataError, match="task"):
        DDS2M("deblur")
    with pytest.raises(InputDataError, match="start_point"):
        DDS2M("denoise", num_steps=10, start_point=20)
    with pytest.raises(InputDataError, match="8x8"):
        DDS2M("denoise", num_steps=2, start_point=1, **TINY).restore(torch.rand(6, 30, 2), sigma=0.1)
    with pytest.raises(InputDataError, match="SVD"):
        from diffrecon.operators import Identity

        m.restore(clean, Identity((16, 16, 3)), sigma=0.1)


def test_rank_not_below_band_count_warns():
    clean = _cube(16, 16, 3)
    with pytest.warns(UserWarning, match="rank R=3 >= number of bands B=3"):
        DDS2M("denoise", num_steps=2, start_point=2, **TINY).restore(clean, sigma=0.1)


def test_rank_auto_picks_marchenko_pastur_rank():
    """rank="auto": R = the number of signal components above the noise edge of the measurement
    (3 for a 3-component cube), recorded in the run record; inpainting falls back to the paper's
    10 capped at B − 1; bad rank values raise."""
    from diffrecon.recon.dds2m import PAPER_RANK, auto_rank

    clean = _cube(24, 20, 8)
    noisy = add_gaussian_noise(clean, 0.05, seed=1)
    kw = {k: v for k, v in TINY.items() if k != "rank"}
    res = DDS2M("denoise", num_steps=6, start_point=4, rank="auto", **kw).restore(noisy, sigma=0.05)
    assert res.record.extra["rank"] == 3 and res.record.settings["rank"] == "auto"
    assert "Marchenko-Pastur" in res.record.extra["rank_rule"]
    assert res.record.extra["network_config"]["rank"] == 3
    assert res.image.shape == clean.shape and torch.isfinite(res.image).all()
    # fixed rank is recorded as given
    res10 = DDS2M("denoise", num_steps=3, start_point=3, **TINY).restore(noisy, sigma=0.05)
    assert res10.record.extra["rank"] == 3 and res10.record.extra["rank_rule"] == "given"
    assert res10.record.settings["rank"] == 3
    # SR: the rule applies to the low-resolution measurement
    op = SpatialSR((24, 20, 8), 2)
    y_lr = add_gaussian_noise(op(clean), 0.05, seed=2)
    assert auto_rank(y_lr, op, 0.05)[0] == 3
    # pure noise has no signal component above the edge: R = 1 (the minimum)
    from diffrecon.operators.hsi import Denoising

    pure = add_gaussian_noise(torch.zeros(24, 20, 8), 0.05, seed=3)
    assert auto_rank(pure, Denoising((24, 20, 8)), 0.05)[0] == 1
    # inpainting: fixed fall-back, capped at B - 1
    mop = Inpainting(random_voxel_mask((24, 20, 8), 0.3))
    r_inp, rule_inp = auto_rank(mop(noisy), mop, 0.05)
    assert r_inp == min(PAPER_RANK, 7) and "fixed" in rule_inp
    for bad in ("five", 0, -2, 2.5, True):
        with pytest.raises(InputDataError, match="rank"):
            DDS2M("denoise", rank=bad)
    assert DDS2M("denoise", rank="AUTO").rank == "auto" and DDS2M("denoise", rank="4").rank == 4


def test_updates_per_step_and_optimiser_checks():
    """updates_per_step = k takes k Adam steps per diffusion step (k × the updates); bad values raise."""
    clean = _cube(16, 16, 4)
    res = DDS2M("denoise", num_steps=5, start_point=4, updates_per_step=3, **TINY).restore(clean, sigma=0.05)
    assert res.record.nfe == 6 and res.record.settings["updates_per_step"] == 3
    for kw in ({"updates_per_step": 0}, {"updates_per_step": 1.5}, {"lr": 0.0}, {"lr": math.nan}):
        with pytest.raises(InputDataError, match=next(iter(kw))):
            DDS2M("denoise", **kw)


def test_samples_average_independent_chains():
    """samples = K averages the final iterates of K chains seeded seed, seed+1, …; the oracle stays
    a single chain's iterate and is labelled; bad K raises."""
    clean = _cube(16, 16, 4)
    noisy = add_gaussian_noise(clean, 0.1, seed=4)
    kw = dict(num_steps=20, start_point=12, **TINY)
    singles = [DDS2M("denoise", seed=s, **kw).restore(noisy, sigma=0.1).image for s in (5, 6)]
    both = DDS2M("denoise", seed=5, samples=2, **kw).restore(noisy, sigma=0.1, ground_truth=clean)
    torch.testing.assert_close(both.image, (singles[0] + singles[1]) / 2)
    rec = both.record
    assert rec.settings["samples"] == 2 and rec.extra["chain_seeds"] == [5, 6] and rec.nfe == 2 * 9
    assert rec.extra["nfe_per_chain"] == 9 and rec.seed == 5
    assert rec.extra["output"] == "mean of 2 chains' final iterates"
    assert rec.extra["oracle"]["chain"] in (0, 1) and "ORACLE" in rec.extra["oracle"]["note"]
    assert len(both.history) == 9 and both.oracle_mpsnr == pytest.approx(max(both.history))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputDataError, match="samples"):
            DDS2M("denoise", samples=bad)


def test_upsample_override_reaches_the_network():
    clean = _cube(16, 16, 4)
    res = DDS2M("denoise", num_steps=4, start_point=3, upsample="nearest", eta_b=0.5, **TINY).restore(
        add_gaussian_noise(clean, 0.1, seed=5), sigma=0.1
    )
    assert res.record.extra["network_config"]["upsample"] == "nearest" and res.record.settings["eta_b"] == 0.5
    default = DDS2M("denoise", num_steps=4, start_point=3, **TINY).restore(clean, sigma=0.1)
    assert default.record.extra["network_config"]["upsample"] == "bilinear"
    with pytest.raises(InputDataError, match="upsample"):
        DDS2M("denoise", upsample="cubic")


def test_tuned_denoiser_settings():
    from diffrecon.recon.dds2m import TUNED_DENOISE

    m = DDS2M.tuned_denoiser(31)
    assert m.task == "denoise" and m.rank == 5 and m.upsample == "nearest" and m.network == "lite"
    assert m.settings()["samples"] == 4 and m.eta_b == 0.5 and m.lr == TUNED_DENOISE["lr"]
    assert DDS2M.tuned_denoiser(4).rank == "auto"  # R = 5 would not stay below B
    assert DDS2M.tuned_denoiser(31, samples=1, rank=7).settings()["samples"] == 1
    for bad in (0, 2.5, True):
        with pytest.raises(InputDataError, match="bands"):
            DDS2M.tuned_denoiser(bad)


def test_result_is_a_reconstruction_with_a_solve_record():
    """restore returns Reconstruction(image, record): it unpacks, record is a SolveRecord with
    method "dds2m", NFE = VS2M forward passes of all chains, steps = T, the seed, settings() and a
    JSON-ready extra; the functional shortcut returns the same."""
    from diffrecon.recon.dds2m import dds2m_restore

    clean = _cube(16, 16, 4)
    noisy = add_gaussian_noise(clean, 0.1, seed=8)
    model = DDS2M("denoise", num_steps=7, start_point=5, samples=2, seed=11, **TINY)
    res = model.restore(noisy, sigma=0.1, ground_truth=clean)
    assert isinstance(res, DDS2MResult) and isinstance(res, Reconstruction)
    image, record = res
    assert image is res.image and record is res.record and res[0] is image
    assert isinstance(record, SolveRecord) and record.method == "dds2m"
    assert record.nfe == record.slice_evaluations == 2 * 3 == 2 * record.extra["nfe_per_chain"]
    assert record.steps == 7 and record.seed == 11 and record.resumed_at is None
    assert record.settings == model.settings() and record.seconds > 0
    assert record.extra["cpu_seconds"] >= 0 and record.extra["seconds_per_update"] > 0
    d = record.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-ready, tensors stay out of the record
    assert set(d["extra"]["oracle"]) == {"mpsnr", "step", "chain", "note"}
    assert isinstance(res.oracle_image, torch.Tensor) and res.oracle_image.shape == clean.shape
    assert isinstance(res.oracle_step, int) and isinstance(res.oracle_mpsnr, float)
    image2, record2 = dds2m_restore(noisy, sigma=0.1, task="denoise", num_steps=7, start_point=5,
                                    samples=2, seed=11, **TINY)
    assert torch.equal(image2, image) and record2.settings == record.settings


def test_schedule_is_the_shared_vp_schedule_bit_for_bit():
    """DDS2M's ᾱ_t come from VPSchedule.linear and equal, bit for bit, the float64
    cumprod(1 − linspace(β_start, β_end, T)) the module computed before issue 13."""
    for task, beta in (("denoise", (1e-4, 5e-3)), ("inpaint", (1e-4, 5e-3)), ("sr", (3e-4, 2e-2))):
        m = DDS2M(task, beta_start=beta[0], beta_end=beta[1])
        sched = m.schedule()
        assert isinstance(sched, VPSchedule) and sched.num_steps == m.num_steps
        assert sched.params == {"num_steps": m.num_steps, "beta_start": beta[0], "beta_end": beta[1]}
        former = torch.cumprod(1.0 - torch.linspace(*beta, m.num_steps, dtype=torch.float64), dim=0)
        assert sched.alphas_cumprod.dtype == torch.float64
        assert torch.equal(sched.alphas_cumprod, former)
        t = torch.tensor([0, m.num_steps // 2, m.num_steps - 1])
        assert torch.equal(sched.alpha_bar(t), former[t])
    one = DDS2M("denoise", num_steps=1, start_point=1).schedule().alphas_cumprod
    assert torch.equal(one, torch.tensor([1 - 1e-4], dtype=torch.float64))


def test_tv_term_uses_finite_difference_and_matches_diff():
    """_tv3 (the optional TV term of the loss) is built on the Neumann FiniteDifference and gives the
    value of Σ_d mean|x.diff(d)| bit for bit (batched too); its gradient equals up to float rounding."""
    from diffrecon.operators.elementary import FiniteDifference
    from diffrecon.recon.dds2m import _TV_DIFFERENCES, _tv3

    assert all(isinstance(d, FiniteDifference) and d.boundary == "neumann" for d in _TV_DIFFERENCES)
    assert [d.axis for d in _TV_DIFFERENCES] == [-3, -2, -1]

    def former(x):
        return sum((x.diff(dim=d).abs().mean() for d in (-3, -2, -1)), torch.zeros(()))

    g = torch.Generator().manual_seed(0)
    cases = (((13, 10, 7), torch.float32), ((2, 9, 6, 5), torch.float64), ((8, 8, 2), torch.float32))
    for shape, dt in cases:
        x = torch.randn(shape, generator=g, dtype=dt)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        va, vb = _tv3(xa), former(xb)
        assert torch.equal(va.detach(), vb.detach())
        va.backward()
        vb.backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-9)
