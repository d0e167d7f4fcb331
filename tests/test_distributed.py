"""A volume sharded over two gloo processes reconstructs exactly as one process (halo-exchanged z-TV)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_sampler_priors import ct_problem, gaussian_prior, gaussian_volume

from diffrecon.errors import InputDataError
from diffrecon.recon.distributed import shard_bounds


def _solvers(prior):
    from diffrecon.recon.diffusion import DDS, DiffusionMBIR

    return {
        "dds_periodic": DDS(prior, steps=6, lam=0.05, rho=2.0, progress=False, seed=5),
        "dds_neumann_all": DDS(
            prior, steps=4, lam=0.05, rho=2.0, tv_axes="all", boundary="neumann", progress=False, seed=5
        ),
        "mbir": DiffusionMBIR(
            gaussian_prior(8, "ve"),
            steps=6,
            lam=0.05,
            rho=2.0,
            final_consistency=True,
            progress=False,
            seed=5,
        ),
    }


def _problem():
    prior = gaussian_prior(8)
    vol = gaussian_volume(prior, 7, seed=3)  # 7 slices over 2 ranks: blocks of 4 and 3
    y, A = ct_problem(vol, 3)
    return prior, y, A


def _worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    from diffrecon.recon.distributed import solve_sharded

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        prior, y, A = _problem()
        for name, solver in _solvers(prior).items():
            x, rec = solve_sharded(solver, y, A)
            if rank == 0:
                torch.save({"x": x, "nfe": rec.nfe}, os.path.join(out_dir, f"{name}.pt"))
    finally:
        dist.destroy_process_group()


def test_shard_bounds():
    assert [shard_bounds(7, 2, r) for r in range(2)] == [(0, 4), (4, 7)]
    assert [shard_bounds(9, 3, r) for r in range(3)] == [(0, 3), (3, 6), (6, 9)]
    with pytest.raises(InputDataError):
        shard_bounds(1, 2, 0)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    prior, y, A = _problem()
    for name, solver in _solvers(prior).items():
        single, rec = solver(y, A)
        sharded = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert sharded["nfe"] == rec.nfe
        assert sharded["x"].shape == single.shape
        assert torch.allclose(sharded["x"], single, atol=2e-5), (
            name,
            float((sharded["x"] - single).abs().max()),
        )
