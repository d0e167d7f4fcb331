"""Diffusion solvers on one skeleton: DDS, DiffusionMBIR, DPS, DiffPIR, DDRM (and every method to come).

* :mod:`~.skeleton` — :class:`DiffusionSolver` (the timestep loop, chunked and counted network calls,
  guidance, seeded rank-independent noise, validation, records) and :class:`SolveContext`;
* :mod:`~.state` — the typed loop state (:class:`SolverState`) and state files for save / resume;
* :mod:`~.records` — :class:`SolveRecord` and :class:`Reconstruction`, shared by every solver;
* :class:`LocalComm` (from :mod:`diffrecon.comm`) — a single process's view of a sharded volume;
* :mod:`~.backprojection` — the reference codes' π/(2N) back-projector and closing data step;
* :mod:`~.dds`, :mod:`~.mbir`, :mod:`~.dps`, :mod:`~.diffpir`, :mod:`~.ddrm` — one method each.

A new method is one short file: a :class:`SolverState` dataclass and a :class:`DiffusionSolver`
subclass with ``timesteps``, ``init_state``, ``step`` (and ``settings``); see
:class:`DiffusionSolver` for a complete example.
"""

from ...comm import LocalComm
from .backprojection import BACKPROJECTORS, exact_equivalent, final_data_consistency, reference_data_weight
from .ddrm import DDRM, DDRMState, SliceSVD, slice_svd
from .dds import DDS, DDSState
from .diffpir import DiffPIR, DiffPIRState, ProximalADMMTV
from .dps import DPS, DPSState
from .mbir import DiffusionMBIR, MBIRState
from .records import Reconstruction, SolveRecord
from .skeleton import AXIS_NAMES, DiffusionSolver, Guidance, Prediction, SolveContext, resolve_axes
from .state import STATE_FORMAT, SolverState

__all__ = [
    "AXIS_NAMES",
    "BACKPROJECTORS",
    "DDRM",
    "DDRMState",
    "DDS",
    "DDSState",
    "DPS",
    "DPSState",
    "DiffPIR",
    "DiffPIRState",
    "DiffusionMBIR",
    "DiffusionSolver",
    "Guidance",
    "LocalComm",
    "MBIRState",
    "Prediction",
    "ProximalADMMTV",
    "Reconstruction",
    "STATE_FORMAT",
    "SolveContext",
    "SliceSVD",
    "SolveRecord",
    "SolverState",
    "exact_equivalent",
    "final_data_consistency",
    "reference_data_weight",
    "resolve_axes",
    "slice_svd",
]
