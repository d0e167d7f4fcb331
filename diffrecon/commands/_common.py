"""Small helpers shared by CLI commands."""

from __future__ import annotations

import json
import pathlib
import resource
import time

import torch

from ..errors import InputDataError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputDataError("--device cuda requested, but torch finds no CUDA device on this machine")
    return dev


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def record_path(output: str | pathlib.Path) -> pathlib.Path:
    """Where the JSON run record of an output goes: ``recon.nii.gz`` → ``recon.json``."""
    p = pathlib.Path(output)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".npz", ".nc", ".h5"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".json")


class Timer:
    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"
