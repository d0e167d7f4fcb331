"""Solver loop state: the typed per-method state, and its atomic save / fingerprinted resume.

A solver's loop state is a dataclass deriving from :class:`SolverState`. Its tensor fields (and the
``state_dict()`` of fields that have one, e.g. an :class:`~diffrecon.recon.classical.ADMMTV` with its
split variables) are what a state file stores; every other field (floats, flags) is rebuilt by the
solver's ``init_state`` when a run resumes. Steps never modify a state's tensors in place, so a
snapshot of references taken after a step stays valid while the next step runs; an interruption
anywhere inside a step saves the last completed one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import torch

from ...errors import InputDataError

Tensor = torch.Tensor

STATE_FORMAT = "diffrecon-solver-state/3"
_OLD_FORMATS = ("diffrecon-solver-state/1", "diffrecon-solver-state/2")


def tensor_sha256(t: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (exact: the same data gives the same digest)."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    arr = t.detach().cpu().contiguous()
    if arr.is_complex():
        arr = torch.view_as_real(arr)
    h.update(arr.numpy().tobytes())
    return h.hexdigest()


def module_sha256(module) -> str | None:
    """SHA-256 over a module's ``state_dict`` (names and tensors); ``None`` for a prior without one."""
    state_dict = getattr(module, "state_dict", None)
    if state_dict is None:
        return None
    h = hashlib.sha256()
    for name, value in state_dict().items():
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(tensor_sha256(value).encode())
    return h.hexdigest()


@dataclasses.dataclass
class SolverState:
    """Base class of a solver's loop state (a dataclass; subclasses add their fields).

    Attributes:
        x0: the current clean estimate, slice-first ``(S, H, W)`` in the prior's data units: what
            ``on_step`` reports and (by default) what the solver returns.
    """

    x0: Tensor

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor to save, by name: tensor fields, and ``field.key`` for fields with a state_dict."""
        out: dict[str, Tensor] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = v
            elif hasattr(v, "state_dict"):
                for k, t in v.state_dict().items():
                    out[f"{f.name}.{k}"] = t
        return out

    def load_tensors(self, saved: dict[str, Tensor], device: torch.device) -> None:
        """Restore what :meth:`tensors` saved (in place; the other fields are kept)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                setattr(self, f.name, saved[f.name].to(device=device, dtype=v.dtype))
            elif hasattr(v, "load_state_dict"):
                prefix = f"{f.name}."
                v.load_state_dict(
                    {k[len(prefix):]: t.to(device) for k, t in saved.items() if k.startswith(prefix)}
                )


@dataclasses.dataclass
class Snapshot:
    """The loop after a completed step: what a state file holds."""

    step: int
    tensors: dict[str, Tensor]
    generator: Tensor
    nfe: int


def save_state(path: str | os.PathLike, snap: Snapshot, fingerprint: dict, seconds: float) -> None:
    """Write a snapshot atomically (temp file + rename) to ``path``."""
    from ...io.atomic import atomic_path

    blob = {
        "format": STATE_FORMAT,
        "step": int(snap.step),
        "seconds": float(seconds),
        "nfe": int(snap.nfe),
        "fingerprint": fingerprint,
        "generator": snap.generator,
        "state": {k: v.detach().cpu() for k, v in snap.tensors.items()},
    }
    with atomic_path(path, overwrite=True, suffix=".pt") as tmp:
        torch.save(blob, tmp)


def load_state(
    path: str | os.PathLike,
    who: str,
    fingerprint: dict,
    generator: torch.Generator,
    n_steps: int | None = None,
) -> dict:
    """Read a state file (``weights_only``) and check it belongs to this run; returns the blob.

    Raises:
        InputDataError: unreadable file, another format, another device's generator, a step outside
            ``0..n_steps`` or a negative NFE, or a fingerprint (method, settings, shapes, the
            measurements' SHA-256, the operator's probe response, the prior's weights' SHA-256) that
            differs from this run's.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises OSError, RuntimeError, KeyError, pickle errors … on bad files
        raise InputDataError(f"{who}: cannot read the solver state {path}: {exc!r}") from exc
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt in _OLD_FORMATS:
        raise InputDataError(
            f"{who}: {path} was written by an older diffrecon ({fmt}); this version reads {STATE_FORMAT}: "
            "restart the run without --resume"
        )
    keys = ("fingerprint", "generator", "nfe", "state", "step", "seconds")
    if fmt != STATE_FORMAT or any(k not in blob for k in keys):
        raise InputDataError(f"{who}: {path} is not a diffrecon solver state ({STATE_FORMAT})")
    if blob["generator"].numel() != generator.get_state().numel():
        raise InputDataError(
            f"{who}: state {path} was written on another device type (its random generator state does "
            f"not fit a {generator.device.type} generator); resume on the device it was saved on"
        )
    found = blob["fingerprint"]
    step, nfe = blob["step"], blob["nfe"]
    if not (isinstance(step, int) and step >= 0 and (n_steps is None or step <= n_steps)):
        raise InputDataError(f"{who}: state {path} claims step {step!r}, outside 0..{n_steps}: not resumable")
    if not (isinstance(nfe, int) and nfe >= 0):
        raise InputDataError(f"{who}: state {path} claims {nfe!r} network evaluations: not resumable")
    for key in ("method", "settings", "shape", "n_total", "lo", "prior_sha256"):
        if fingerprint[key] != found.get(key):
            raise InputDataError(
                f"{who}: state {path} comes from another run: {key} was {found.get(key)!r}, "
                f"now {fingerprint[key]!r}"
            )
    if fingerprint["data_sha256"] != found.get("data_sha256"):
        raise InputDataError(f"{who}: state {path} was written for different measurements")
    probe, found_probe = fingerprint["operator_probe"], found.get("operator_probe") or []
    if len(found_probe) != len(probe) or not all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9) for a, b in zip(probe, found_probe, strict=True)
    ):
        raise InputDataError(
            f"{who}: state {path} was written for another operator (geometry, angles, mask or coils differ)"
        )
    return blob
