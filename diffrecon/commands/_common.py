"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
import pathlib

import torch

from .._runtime import Timer, peak_rss_mb
from ..errors import InputDataError

__all__ = [
    "METHOD_ALIASES",
    "Timer",
    "add_device_argument",
    "alias_help",
    "canonical_method",
    "dump_json",
    "peak_rss_mb",
    "record_path",
    "resolve_device",
]

# Method names are the library's (``diffrecon.recon.admm_tv``, ``DiffusionMBIR`` → ``diffusion_mbir``, the
# names in the demo's metrics.json); these older command-line spellings are still accepted and are
# rewritten to the canonical name before anything is run or recorded.
METHOD_ALIASES = {"tv": "admm_tv", "mbir": "diffusion_mbir"}


def canonical_method(name: str) -> str:
    """The canonical method name for ``name`` (an alias of :data:`METHOD_ALIASES`, or ``name`` itself).

    Used as the argparse ``type=`` of every ``--method``/``--methods`` option, so ``args.method`` is always
    canonical (and argparse's ``choices`` lists canonical names only)."""
    return METHOD_ALIASES.get(name, name)


def alias_help() -> str:
    """The sentence the ``--method`` help texts end with."""
    return "aliases: " + ", ".join(f"{a} = {c}" for a, c in METHOD_ALIASES.items())


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputDataError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputDataError(f"--device {name}: diffrecon runs on cpu or cuda (cuda:N), found {dev.type!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputDataError("--device cuda requested, but torch finds no CUDA device on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputDataError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")


def record_path(output: str | pathlib.Path) -> pathlib.Path:
    """Where the JSON run record of an output goes: ``recon.nii.gz`` → ``recon.json``."""
    p = pathlib.Path(output)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".npz", ".nc", ".h5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".json")


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def require_finite(result, what: str = "the reconstruction") -> None:
    """Refuse to write a result holding NaN or Inf (bad weights, a zero scale, a corrupt state file):
    such a file would look like a success to every later step."""
    import numpy as np

    from ..recon.validation import check_finite

    tensor = result if isinstance(result, torch.Tensor) else torch.as_tensor(np.asarray(result))
    try:
        check_finite(tensor.detach(), what)
    except InputDataError as exc:
        raise InputDataError(
            f"{exc}; non-finite results are not written (check the prior weights, --image-scale and any "
            "--resume state)"
        ) from None
