"""Registry of every operator for the conformance suite.

Each area registers its operators in its own module ``tests/registry_<area>.py`` with::

    @register("ParallelBeam2D-sparse")
    def _(dtype, device):
        return OperatorCase(ParallelBeam2D((6, 5), sparse_angles(3)).to(device), ...)

Factories build *tiny* instances (float64 gradcheck runs on them) for a real ``dtype``
(float32/float64) on ``device``. ``in_complex``/``out_complex`` say whether the domain/range is
complex (then complex64/complex128 tensors are used).
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffrecon.operators import LinearOperator


@dataclass
class OperatorCase:
    op: LinearOperator
    in_complex: bool = False
    out_complex: bool = False
    batch_shape: tuple[int, ...] = (2,)


OPERATORS: dict[str, Callable[[torch.dtype, torch.device], OperatorCase]] = {}


def register(name: str):
    def deco(factory):
        if name in OPERATORS:
            raise ValueError(f"operator {name!r} registered twice")
        OPERATORS[name] = factory
        return factory

    return deco


def load_all() -> dict:
    here = pathlib.Path(__file__).parent
    for path in sorted(here.glob("registry_*.py")):
        importlib.import_module(path.stem)
    return OPERATORS
