"""The bundled prior loads offline and denoises held-out sample-volume slices better than the input."""

import importlib.util
import pathlib

import pytest
import torch

import diffrecon.priors as P

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "prior_denoising.py"


def _bench():
    spec = importlib.util.spec_from_file_location("prior_denoising", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_prior_is_registered_and_loads():
    assert "head-64" in P.available()
    prior = P.load("head-64")
    assert isinstance(prior, P.DiffusionPrior)
    assert prior.image_shape == (1, 64, 64)
    assert prior.parameterisation == "v" and prior.schedule.num_steps == 1000
    assert not prior.training
    assert all(p.dtype == torch.float32 for p in prior.parameters())
    # weights stay small
    w = pathlib.Path(P.registry.WEIGHTS_DIR) / "head-64.safetensors"
    assert w.stat().st_size < 8e6
    assert "Colin" not in prior.config.get("data_description", "").replace("never Colin27", "")


def test_bundled_prior_denoises_sample_slices():
    torch.manual_seed(0)
    mod = _bench()
    x = mod.sample_slices(per_axis=4)  # 12 held-out Colin27 slices
    res = mod.run(P.load("head-64"), x, [0.05, 0.1, 0.2])
    for r in res:
        assert r["output_psnr"] > r["input_psnr"] + 1.0, r


@pytest.mark.slow
def test_benchmark_json_output(capsys):
    mod = _bench()
    assert mod.main(["--prior", "head-64", "--per-axis", "2", "--sigmas", "0.1", "--json"]) == 0
    import json

    lines = [json.loads(s) for s in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 1 and {"noise_level", "input_psnr", "output_psnr"} <= set(lines[0])
