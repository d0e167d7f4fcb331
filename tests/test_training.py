"""Training loop: loss goes down, resume is exact, DDP with two gloo processes, latent priors, CLI."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffrecon.priors import DiffusionPrior, LatentPrior, load
from diffrecon.priors.checkpoint import load_safetensors
from diffrecon.priors.train import SliceSource, TrainConfig, build_prior, train

TINY = {"type": "diffrecon.TinyDenoiser", "kwargs": {"width": 12, "depth": 2}}


def _blobs(n=64, size=16, seed=0):
    """Smooth random blob images in [0, 1] (N, size, size)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        cx, cy, r = g.uniform(0.3, 0.7, 2).tolist() + [g.uniform(0.15, 0.3)]
        out.append(np.clip(1.2 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2, 0, 1) * g.uniform(0.5, 1))
    return np.stack(out).astype(np.float32)


def _cfg(**kw):
    base = dict(
        image_size=16,
        architecture=TINY,
        schedule={
            "type": "vp",
            "beta_schedule": "linear",
            "num_steps": 100,
            "beta_start": 1e-3,
            "beta_end": 0.05,
        },
        batch_size=16,
        lr=3e-3,
        warmup=1,
        steps=60,
        ema_decay=0.5,
        val_every=0,
        log_every=10,
        ckpt_minutes=100,
        augment=False,
        val_levels=[20.0],
    )
    base.update(kw)
    return TrainConfig(**base)


def _fixed_loss(prior: DiffusionPrior, x):
    g = torch.Generator().manual_seed(123)
    z0 = prior.normalise(x)
    t = torch.randint(0, 100, (x.shape[0],), generator=g)
    n = torch.randn(z0.shape, generator=g)
    with torch.no_grad():
        return float(F.mse_loss(prior(prior.add_noise(z0, n, t), t), prior.target(z0, n, t)))


def test_few_steps_reduce_loss(tmp_path):
    torch.manual_seed(0)
    x = torch.from_numpy(_blobs(64))[:, None]
    cfg = _cfg()
    before = _fixed_loss(build_prior(cfg), x)  # same init as train() after manual_seed
    torch.manual_seed(0)
    info = train(cfg, SliceSource(x.numpy()[:, 0]), tmp_path / "run", progress=False)
    after = _fixed_loss(load(tmp_path / "run" / "ema_prior"), x)
    assert info["step"] == 60
    assert after < 0.7 * before, (before, after)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "train" for r in lines)


@pytest.mark.parametrize(
    "schedule,param,time_input",
    [
        ({"type": "vp", "beta_schedule": "cosine", "num_steps": 100}, "eps", "index"),
        ({"type": "ve", "sigma_min": 0.01, "sigma_max": 20.0}, "score", "t1000"),
        ({"type": "vp_continuous", "beta_min": 0.1, "beta_max": 20.0}, "x0", "log_sigma"),
    ],
)
def test_other_schedules_train(tmp_path, schedule, param, time_input):
    x = _blobs(16)
    cfg = _cfg(schedule=schedule, parameterisation=param, time_input=time_input, steps=3, val_every=3)
    info = train(cfg, SliceSource(x, holdout=4), tmp_path / "r", progress=False)
    assert info["step"] == 3 and np.isfinite(info["final_loss"])
    p = load(tmp_path / "r" / "ema_prior")
    assert p.parameterisation == param and p.schedule.to_config()["type"] == schedule["type"]


def test_resume_is_exact(tmp_path):
    x = _blobs(32)[:, None]
    torch.manual_seed(1)
    train(_cfg(steps=8), SliceSource(x), tmp_path / "a", progress=False)
    torch.manual_seed(1)
    train(_cfg(steps=4), SliceSource(x), tmp_path / "b", progress=False)
    info = train(_cfg(steps=8), SliceSource(x), tmp_path / "b", resume=True, progress=False)
    assert info["step"] == 8
    a, b = (
        load_safetensors(tmp_path / "a" / "state.safetensors"),
        load_safetensors(tmp_path / "b" / "state.safetensors"),
    )
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_validation_reports_psnr(tmp_path):
    x = _blobs(40)
    src = SliceSource(x, holdout=8)
    info = train(_cfg(steps=4, val_every=2, val_levels=[25.0, 15.0]), src, tmp_path / "r", progress=False)
    v = info["history"][-1]["val"]
    assert [r["noise_level"] for r in v] == [25.0, 15.0]
    assert abs(v[0]["input_psnr"] - 25.0) < 1.0 and abs(v[1]["input_psnr"] - 15.0) < 1.0


def test_mixed_precision_needs_cuda(tmp_path):
    from diffrecon.errors import DiffreconError

    with pytest.raises(DiffreconError, match="CUDA"):
        train(_cfg(mixed_precision=True), SliceSource(_blobs(8)), tmp_path / "r", progress=False)


def _ddp_worker(rank, world, port, run_dir, result_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        train(_cfg(steps=5), SliceSource(_blobs(32)[:, None]), run_dir, progress=False)
        model_state = load_safetensors(os.path.join(run_dir, "state.safetensors")) if rank == 0 else None
        del model_state
        # every rank reports its final parameters
        from diffrecon.priors.checkpoint import save_safetensors

        torch.distributed.barrier()
        st = load_safetensors(os.path.join(run_dir, "state.safetensors"))
        save_safetensors(
            {k: v for k, v in st.items() if k.startswith("model.")},
            os.path.join(result_dir, f"r{rank}.safetensors"),
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    st = load_safetensors(tmp_path / "run" / "state.safetensors")
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 5
    assert json.loads((tmp_path / "run" / "state.json").read_text())["config"]["batch_size"] == 16
    assert any(k.startswith("ema.") for k in st)
    assert load(tmp_path / "run" / "ema_prior").config["training"]["batch_size"] == 32  # 2 ranks × 16


@pytest.mark.slow
def test_latent_prior_two_stages(tmp_path):
    from diffrecon.priors.train import ae_config

    x = _blobs(48)
    cfg = _cfg(
        kind="latent",
        steps=6,
        ae_steps=6,
        batch_size=8,
        ae_architecture=ae_config((8, 8), latent_channels=2, norm_num_groups=4),
        architecture={"type": "diffrecon.TinyDenoiser", "kwargs": {"in_channels": 2, "width": 8, "depth": 1}},
    )
    info = train(cfg, SliceSource(x), tmp_path / "lat", progress=False, export=tmp_path / "lat-prior")
    assert info["step"] == 6 and info["scale_factor"] > 0
    lp = load(tmp_path / "lat-prior")
    assert isinstance(lp, LatentPrior)
    img = torch.from_numpy(x[:2])[:, None]
    z = lp.encode(img)
    assert z.shape == (2, 2, 8, 8)
    assert lp.decode(z).shape == (2, 1, 16, 16)
    s = lp.sample(2, steps=3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 1, 16, 16) and torch.isfinite(s).all()
    # resuming skips the autoencoder stage
    info2 = train(cfg, SliceSource(x), tmp_path / "lat", resume=True, progress=False)
    assert info2["step"] == 6


@pytest.mark.slow
def test_cli_from_nifti(tmp_path, capsys):
    import nibabel as nib

    from diffrecon.cli import main

    d = tmp_path / "vols"
    d.mkdir()
    g = np.random.default_rng(0)
    for i in range(2):
        zz, yy, xx = np.mgrid[:24, :28, :20]
        v = np.exp(-(((xx - 10) / 7) ** 2 + ((yy - 14) / 9) ** 2 + ((zz - 12) / 8) ** 2)) * (
            1 + 0.1 * g.random((24, 28, 20))
        )
        nib.save(nib.Nifti1Image(v.astype(np.float32), np.eye(4)), str(d / f"v{i}.nii.gz"))
    rc = main(
        [
            "train-prior",
            "--data",
            str(d),
            "--out",
            str(tmp_path / "run"),
            "--image-size",
            "16",
            "--channels",
            "8",
            "16",
            "--head-channels",
            "8",
            "--norm-groups",
            "8",
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--val-every",
            "2",
            "--val-slices",
            "4",
            "--timesteps",
            "100",
            "--export",
            str(tmp_path / "exported"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "training slices" in out and "denoising PSNR" in out
    p = load(tmp_path / "exported")
    assert p.image_shape == (1, 16, 16)
    rc = main(["train-prior", "--out", str(tmp_path / "run"), "--resume", "--steps", "6", "--no-progress"])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 6
    # a run folder or an exported prior is never replaced without --overwrite (issue 19 audit, row 1)
    exported = (tmp_path / "exported.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train-prior", "--data", str(d), "--out", str(tmp_path / "run"), "--steps", "2",
                 "--no-progress"]) == 1
    assert "holds a training run" in capsys.readouterr().err
    assert main(["train-prior", "--out", str(tmp_path / "run"), "--resume", "--steps", "7", "--no-progress",
                 "--export", str(tmp_path / "exported")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 6
    assert (tmp_path / "exported.safetensors").read_bytes() == exported
    with pytest.raises(SystemExit):
        main(["train-prior", "--out", str(tmp_path / "x"), "--kind", "nope"])
    assert main(["train-prior", "--out", str(tmp_path / "y"), "--data", str(tmp_path / "missing")]) == 1


def test_training_state_pack_unpack_restores_run_and_ema_prior(tmp_path):
    """scripts/training_state.py: git-sized shards round-trip the state, and unpack rebuilds the EMA prior."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "training_state.py"
    spec = importlib.util.spec_from_file_location("training_state", path)
    ts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ts)

    train(_cfg(steps=6), SliceSource(_blobs(24)[:, None]), tmp_path / "run", progress=False)
    ts.pack(tmp_path / "run", tmp_path / "packed", max_mb=0.02)
    assert len(list((tmp_path / "packed").glob("state-*.safetensors"))) > 1
    ts.unpack(tmp_path / "packed", tmp_path / "restored")
    a = load_safetensors(tmp_path / "run" / "state.safetensors")
    b = load_safetensors(tmp_path / "restored" / "state.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    original, rebuilt = load(tmp_path / "run" / "ema_prior"), load(tmp_path / "restored" / "ema_prior")
    for k, v in original.network.state_dict().items():
        assert torch.equal(v, rebuilt.network.state_dict()[k]), k
    assert rebuilt.config["training"]["steps"] == 6
