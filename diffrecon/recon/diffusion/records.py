"""What a solver returns: the estimate and a small JSON-ready record of how it was made.

Every solver in :mod:`diffrecon.recon` (the diffusion solvers, DDS2M, …) returns a
:class:`Reconstruction` ``(image, record)``; the CLI writes ``record.to_dict()`` next to the output.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch


@dataclasses.dataclass
class SolveRecord:
    """What a solver did.

    Attributes:
        method: solver name (``"dds"``, ``"diffusion_mbir"``, ``"dps"``, ``"dds_2d"``, ``"dds2m"``, …).
        nfe: network evaluations per slice (or per cube), the count diffusion papers report.
        slice_evaluations: network forwards in total (nfe × slices; nfe for a single image).
        seconds: wall-clock time of the loop (summed over resumed parts).
        steps: number of sampler steps.
        seed: generator seed.
        settings: the solver's hyperparameters.
        resumed_at: step index the run was resumed from (None for a fresh run).
        extra: method-specific outcomes that are not settings (e.g. DDS2M's oracle step); JSON-ready.
    """

    method: str
    nfe: int
    slice_evaluations: int
    seconds: float
    steps: int
    seed: int
    settings: dict
    resumed_at: int | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Reconstruction(NamedTuple):
    """``(image, record)``: the estimate in image units and the operator's layout, and its record."""

    image: torch.Tensor
    record: SolveRecord
