"""Reconstruction algorithms: analytic (FBP/FDK), classical iterative (CG, ADMM-TV, SENSE) and
diffusion-based solvers. Names resolve lazily to their modules, so importing this package is cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "fbp": "analytic",
    "fdk": "analytic",
    "cg": "classical",
    "admm_tv": "classical",
    "ADMMTV": "classical",
    "soft_threshold": "classical",
    "zero_filled": "mri",
    "zero_filled_rss": "mri",
    "sense_operator": "mri",
    "cg_sense": "mri",
    "tv_sense": "mri",
    "DDS": "diffusion",
    "DiffusionMBIR": "diffusion",
    "DPS": "diffusion",
    "DiffPIR": "diffusion",
    "DDRM": "diffusion",
    "DiffusionSolver": "diffusion",
    "SolverState": "diffusion",
    "SolveContext": "diffusion",
    "SolveRecord": "diffusion",
    "Reconstruction": "diffusion",
    "LocalComm": "diffusion",
    "build_problem": "problems",
    "ct_operator": "problems",
    "mri_operator": "problems",
    "problem_operator": "problems",
    "PROBLEMS": "problems",
    "Problem": "problems",
    "solve_sharded": "distributed",
    "DDS2M": "dds2m",
    "DDS2MResult": "dds2m",
    "dds2m_restore": "dds2m",
    "tv_restore": "hsi_baselines",
    "subspace_denoise": "hsi_baselines",
    "interpolate_missing": "hsi_baselines",
    "upsample_bicubic": "hsi_baselines",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
