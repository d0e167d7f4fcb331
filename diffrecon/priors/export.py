"""Export a trained prior (e.g. a run's EMA weights) for bundling, and draw a grid of samples.

Usage (what ``scripts/train_bundled_prior.sh`` runs at the end)::

    python -m diffrecon.priors.export runs/head64/ema_prior diffrecon/priors/weights/head-64 \\
        --name head-64 --half --samples docs/img/prior_samples.png

The exported JSON gets ``name``, the run's training record (steps, seconds, last validation) and,
with ``--benchmark``, the denoising curve on the held-out sample volume. ``src`` is any form
:func:`diffrecon.priors.load` accepts (with ``--architecture`` for a state dict). Bad input ends with a
one-line ``export: error: …`` on stderr and exit status 1 (argparse errors: status 2).
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch

from ..errors import DiffreconError
from .checkpoint import save_prior


@torch.no_grad()
def sample_grid(prior, path, n: int = 16, steps: int = 50, seed: int = 0, eta: float = 0.0) -> None:
    """Save an (n/4 × 4) PNG grid of unconditional DDIM-η samples in [0, 1] (η = 0 deterministic, η = 1
    ancestral, DDPM-like)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = prior.sample(n, steps=steps, eta=eta, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
    cols = 4 if n >= 4 else n
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.6))
    for i, ax in enumerate(getattr(axes, "flat", [axes])):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i, 0].T.numpy(), cmap="gray", vmin=0, vmax=1, origin="lower")
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0.02)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (one-line errors, no tracebacks)."""
    from ..cli import OneLineErrorParser, _one_line

    p = OneLineErrorParser(prog="export", description="export a prior for bundling")
    p.add_argument("src", help="checkpoint stem (e.g. runs/head64/ema_prior) or any form priors.load takes")
    p.add_argument("dst", help="output stem (e.g. diffrecon/priors/weights/head-64)")
    p.add_argument("--name", help="registry name stored in the JSON")
    p.add_argument("--half", action="store_true", help="store weights as float16")
    p.add_argument("--samples", help="also write a PNG grid of DDIM samples here")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--sample-eta", type=float, default=0.0,
                   help="DDIM eta of the sample grid (1 = ancestral)")
    p.add_argument(
        "--benchmark", action="store_true", help="store the sample-volume denoising curve in the JSON"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an existing prior at dst")
    p.add_argument("--architecture", help="architecture JSON of a .pth/.pt/.ckpt state dict src")
    a = p.parse_args(argv)
    if a.threads < 1 or a.sample_steps < 1:
        p.error("--threads and --sample-steps must be >= 1")
    try:
        return _export(a)
    except DiffreconError as exc:
        print(f"export: error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"export: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
    except ValueError as exc:  # e.g. more sample steps than the schedule has
        print(f"export: error: {_one_line(exc)}", file=sys.stderr)
    return 1


def _export(a) -> int:
    from .registry import load

    torch.set_num_threads(a.threads)
    prior = load(a.src, architecture=a.architecture)
    if a.name:
        prior.config["name"] = a.name
    if a.benchmark:
        import importlib.util

        bench = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "prior_denoising.py"
        spec = importlib.util.spec_from_file_location("prior_denoising", bench)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["prior_denoising"] = mod
        spec.loader.exec_module(mod)
        res = mod.run(prior, mod.sample_slices(), mod.DEFAULT_SIGMAS)
        prior.config["sample_volume_denoising"] = res
        print(json.dumps(res, indent=1))
    for f in save_prior(prior, a.dst, overwrite=a.overwrite, dtype=torch.float16 if a.half else None):
        f.chmod(0o644)  # package data must be world-readable, whatever the umask
    print(f"exported {a.src} -> {a.dst}.safetensors/.json")
    if a.samples:
        sample_grid(prior, a.samples, steps=a.sample_steps, eta=a.sample_eta)
        print(f"wrote {a.samples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
