"""Precomputed banks of 2D training slices (``.npy`` shards) so training is never loader-bound.

A bank is a folder of ``shard-XXXXX.npy`` files, each a float16 array (N, H, W) of slices in [0, 1],
plus ``bank.json`` describing how it was made. Slices are taken along all three axes of each
(size³) volume in the volume's own array orientation — axis 0 gives (Y, Z) images, axis 1 (X, Z),
axis 2 (X, Y) — and nearly empty slices (mean < ``min_mean`` or less than ``min_fg`` of the pixels
above 0.1) are dropped.

Command line (what ``scripts/train_bundled_prior.sh`` runs)::

    python -m diffrecon.datasets.bank --out runs/bank-head64 --volumes 400 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import time

import numpy as np


def volume_slices(
    vol: np.ndarray, axes=(0, 1, 2), min_mean: float = 0.03, min_fg: float = 0.08
) -> np.ndarray:
    """All informative 2D slices of a cubic volume along ``axes``: array (N, S, S) float32."""
    out = []
    for ax in axes:
        s = np.moveaxis(vol, ax, 0)
        keep = (s.mean(axis=(1, 2)) >= min_mean) & ((s > 0.1).mean(axis=(1, 2)) >= min_fg)
        out.append(s[keep])
    return np.concatenate(out, 0).astype(np.float32)


def load_bank(path: str | pathlib.Path, max_slices: int | None = None) -> np.ndarray:
    """Load every shard of a bank folder (or a single ``.npy``) as one float16 array (N, H, W)."""
    p = pathlib.Path(path)
    files = sorted(p.glob("shard-*.npy")) if p.is_dir() else [p]
    if not files:
        from ..errors import InputDataError

        raise InputDataError(f"no slice shards (shard-*.npy) found in {p}")
    arr = np.concatenate([np.load(f, allow_pickle=False) for f in files], 0)
    return arr[:max_slices] if max_slices else arr


def build_bank(
    out: str | pathlib.Path,
    volumes: int,
    seed: int = 0,
    size: int = 64,
    shard_volumes: int = 20,
    include_real: bool = True,
    log=print,
    workers: int = 1,
) -> pathlib.Path:
    """Generate ``volumes`` synthetic heads (:func:`synth_head`) plus the real MNI152 templates and
    write their slices as shards. Existing shards are kept, so an interrupted build resumes.

    Shard ``k`` is generated from its own generator ``default_rng([seed, k])``, so the bank is the
    same whatever ``workers`` (parallel processes, one shard each at a time) is.
    """
    from .synth import load_mni_maps, real_mni_heads

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if include_real and not (out / "shard-real.npy").exists():
        real = np.concatenate([volume_slices(v) for v in real_mni_heads(size)], 0)
        np.save(out / "shard-real.npy", real.astype(np.float16))
    n_shards = (volumes + shard_volumes - 1) // shard_volumes
    missing = [k for k in range(n_shards) if not (out / f"shard-{k:05d}.npy").exists()]
    jobs = [(out, k, min(shard_volumes, volumes - k * shard_volumes), seed, size) for k in missing]
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            pool = stack.enter_context(mp.get_context("spawn").Pool(min(workers, len(jobs))))
            done = pool.imap_unordered(_write_shard, jobs)
        else:
            maps = load_mni_maps(2) if jobs else None
            done = (_write_shard(job, maps) for job in jobs)
        for i, (k, n) in enumerate(done, 1):
            log(f"shard {k + 1}/{n_shards}: {n} slices ({i}/{len(jobs)} done, {time.time() - t0:.0f} s)")
    meta = {
        "volumes": volumes,
        "seed": seed,
        "size": size,
        "shard_volumes": shard_volumes,
        "include_real": include_real,
        "source": "nilearn MNI152 2009a sym. T1 (1 mm, 2 mm) + SynthSeg-style synthesis from MNI152 "
        "GM/WM/brain-mask maps (diffrecon.datasets.synth)",
        "slices": int(sum(np.load(f, mmap_mode="r").shape[0] for f in out.glob("shard-*.npy"))),
    }
    (out / "bank.json").write_text(json.dumps(meta, indent=2))
    return out


def _write_shard(job, maps=None) -> tuple[int, int]:
    """Generate shard ``k`` (``count`` synthetic heads) and write it atomically; returns (k, slices)."""
    from .synth import load_mni_maps, synth_head

    out, k, count, seed, size = job
    if maps is None:
        import torch

        torch.set_num_threads(1)
        maps = load_mni_maps(2)
    rng = np.random.default_rng([seed, k])
    arr = np.concatenate([volume_slices(synth_head(maps, rng, size=size)[0]) for _ in range(count)], 0)
    tmp = out / f".tmp-{k:05d}.npy"
    np.save(tmp, arr.astype(np.float16))
    tmp.rename(out / f"shard-{k:05d}.npy")
    return k, arr.shape[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="build a 2D slice bank of synthetic + MNI152 heads")
    p.add_argument("--out", required=True)
    p.add_argument("--volumes", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="parallel processes (same bank for any number)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    build_bank(a.out, a.volumes, a.seed, a.size, workers=a.workers)


if __name__ == "__main__":
    main()
