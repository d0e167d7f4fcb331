"""Denoising benchmark of a diffusion prior on held-out sample-volume slices (Tweedie estimate).

For each noise level σ (std of additive Gaussian noise in [0, 1] image units) every selected slice
``x`` of :func:`diffrecon.datasets.sample_volume` becomes ``y = x + σ n``; the prior's one-step
MMSE estimate ``prior.denoise(y, σ)`` (Tweedie's formula at the step with ``s_t/a_t = 2σ``) is
compared with ``x``. PSNR uses data range 1 and the MSE pooled over all slices.

Usage::

    .venv/bin/python benchmarks/prior_denoising.py --prior head-64            # table
    .venv/bin/python benchmarks/prior_denoising.py --prior head-64 --json     # one JSON object per level
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

DEFAULT_SIGMAS = [0.0316, 0.0562, 0.1, 0.178, 0.316]  # input PSNR ≈ 30, 25, 20, 15, 10 dB


def sample_slices(axes=(0, 1, 2), per_axis: int = 32) -> torch.Tensor:
    """Informative slices of the sample volume, ``per_axis`` evenly spaced per axis: (N, 1, 64, 64)."""
    from diffrecon.datasets import sample_volume
    from diffrecon.datasets.bank import volume_slices

    vol, _ = sample_volume()
    out = []
    for ax in axes:
        s = volume_slices(vol.numpy(), axes=(ax,))
        idx = np.linspace(0, len(s) - 1, min(per_axis, len(s))).round().astype(int)
        out.append(s[idx])
    return torch.from_numpy(np.concatenate(out))[:, None]


@torch.no_grad()
def run(prior, x: torch.Tensor, sigmas, seed: int = 0, chunk: int = 48) -> list[dict]:
    from diffrecon.metrics import psnr

    g = torch.Generator().manual_seed(seed)
    res = []
    for sig in sigmas:
        y = x + sig * torch.randn(x.shape, generator=g)
        t0 = time.time()
        est = torch.cat([prior.denoise(y[i : i + chunk], sig) for i in range(0, len(y), chunk)]).clamp(0, 1)
        res.append(
            {
                "noise_level": sig,
                "input_psnr": round(psnr(y, x, data_range=1.0), 3),
                "output_psnr": round(psnr(est, x, data_range=1.0), 3),
                "gain_db": round(psnr(est, x, data_range=1.0) - psnr(y, x, data_range=1.0), 3),
                "slices": int(len(x)),
                "seconds": round(time.time() - t0, 2),
            }
        )
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="head-64", help="bundled prior name or checkpoint path")
    p.add_argument("--sigmas", type=float, nargs="+", default=DEFAULT_SIGMAS)
    p.add_argument("--per-axis", type=int, default=32, help="slices per axis (3 axes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON object per noise level")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from diffrecon.priors import load

    prior = load(a.prior)
    x = sample_slices(per_axis=a.per_axis)
    res = run(prior, x, a.sigmas, a.seed)
    if a.json:
        for r in res:
            print(json.dumps(r))
    else:
        print(f"prior {a.prior}: {len(x)} held-out Colin27 slices (axes 0/1/2)")
        print(f"{'sigma':>7} {'input dB':>9} {'Tweedie dB':>11} {'gain dB':>8}")
        for r in res:
            print(
                f"{r['noise_level']:7.4f} {r['input_psnr']:9.2f} {r['output_psnr']:11.2f} {r['gain_db']:8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
