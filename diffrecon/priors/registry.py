"""Find and load a prior from a name or a path: ``diffrecon.priors.load("head-64")``.

Accepted forms, tried in this order:

1. a **bundled name** (``diffrecon.priors.available()``): ``<name>.safetensors`` + ``<name>.json`` in
   ``diffrecon/priors/weights/`` (installed as package data, so loading works offline);
2. a **directory**: a local diffusers folder with ``unet/`` + ``scheduler/`` (optional ``vae/``), as
   ``save_pretrained`` writes it (:func:`~diffrecon.priors.adapters.from_diffusers`);
3. a **PyTorch state dict** ``.pth``/``.pt``/``.ckpt``, loaded with ``torch.load(weights_only=True)``,
   plus its architecture JSON (``architecture=``, default ``<stem>.json`` beside it;
   :func:`~diffrecon.priors.adapters.from_state_dict`);
4. a **diffrecon checkpoint**: its stem, ``.json`` or ``.safetensors`` (:func:`.checkpoint.load_prior`);
   with ``architecture=`` a ``.safetensors`` file is read as a plain state dict instead.
"""

from __future__ import annotations

import os
import pathlib

from ..errors import CheckpointError

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
ACCEPTED = (
    "a bundled name, a diffrecon checkpoint (STEM, STEM.json or STEM.safetensors), a diffusers folder "
    "(unet/ + scheduler/) or a .pth/.pt/.ckpt state dict with --architecture FILE.json"
)


def available() -> list[str]:
    """Names of the bundled priors."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".safetensors").exists())


def _append(stem: pathlib.Path, ext: str) -> pathlib.Path:
    return stem.parent / (stem.name + ext)


def _stem(p: pathlib.Path) -> pathlib.Path:
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def _not_found(s: str) -> CheckpointError:
    p = pathlib.Path(s)
    stem = _stem(p)
    looked = []
    if os.sep not in s and "/" not in s:
        looked.append(f"no bundled prior named {s!r} (bundled: {', '.join(available()) or 'none'})")
    looked.append(f"no diffrecon checkpoint at {_append(stem, '.json')} / {_append(stem, '.safetensors')}")
    looked.append(f"no diffusers folder at {p} (missing {p / 'unet'})")
    return CheckpointError(f"prior not found: {', '.join(looked)}; a prior is {ACCEPTED}")


def _not_diffusers(p: pathlib.Path) -> CheckpointError:
    stems = sorted(str(j.with_suffix("")) for j in p.glob("*.json") if j.with_suffix(".safetensors").exists())
    hint = f"; it holds the diffrecon checkpoint(s) {', '.join(stems[:3])}: pass one" if stems else ""
    return CheckpointError(f"no diffusers folder at {p} (missing {p / 'unet'}/){hint}")


def resolve(name_or_path: str | os.PathLike) -> pathlib.Path:
    """The path :func:`load` would read for ``name_or_path``: the stem of a bundled prior or of a diffrecon
    checkpoint, a diffusers folder, or a state dict file. Raises :class:`CheckpointError` naming every
    path looked for when there is none."""
    s = str(name_or_path)
    if s in available():
        return WEIGHTS_DIR / s
    p = pathlib.Path(s)
    if p.is_dir() or (p.suffix.lower() in _torch_suffixes() and p.is_file()):
        return p
    stem = _stem(p)
    if _append(stem, ".json").exists() or _append(stem, ".safetensors").exists():
        return stem
    if p.suffix.lower() in _torch_suffixes():
        raise CheckpointError(f"no PyTorch weights file at {p}")
    raise _not_found(s)


def _torch_suffixes() -> tuple[str, ...]:
    from .adapters import TORCH_SUFFIXES

    return TORCH_SUFFIXES


def load(name_or_path: str | os.PathLike, device="cpu", architecture=None):
    """Load a prior from any accepted form (module docstring).

    Args:
        name_or_path: bundled name, diffrecon checkpoint, diffusers folder, or state dict file.
        device: where the prior goes.
        architecture: for a state dict file only: the prior description (a dict, or a JSON file in the
            layout of a diffrecon checkpoint JSON; default ``<stem>.json`` beside the weights).

    Raises :class:`~diffrecon.errors.CheckpointError` naming the file(s) looked for and the problem.
    """
    from .adapters import TORCH_SUFFIXES, from_diffusers, from_state_dict
    from .checkpoint import load_prior

    s = str(name_or_path)
    p = pathlib.Path(s)
    is_torch = p.suffix.lower() in TORCH_SUFFIXES
    if architecture is not None and not is_torch and not (p.suffix == ".safetensors" and p.is_file()):
        raise CheckpointError(
            f"--architecture describes a .pth/.pt/.ckpt (or bare .safetensors) state dict; {s} is not one "
            "(a bundled prior, checkpoint stem or diffusers folder carries its own architecture)"
        )
    if architecture is None and s in available():
        return load_prior(WEIGHTS_DIR / s, device=device)
    if p.is_dir():
        if not (p / "unet").is_dir():
            raise _not_diffusers(p)
        return from_diffusers(p, device=device)
    if is_torch or architecture is not None:
        return from_state_dict(p, architecture, device=device)
    return load_prior(resolve(s), device=device)
