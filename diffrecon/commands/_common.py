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
    "add_png_arguments",
    "alias_help",
    "canonical_method",
    "check_png",
    "dump_json",
    "peak_rss_mb",
    "png_path",
    "record_path",
    "resolve_device",
    "write_montage",
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


_OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".npz", ".nc", ".h5")


def _beside(output: str | pathlib.Path, suffix: str) -> pathlib.Path:
    """``output`` with its data suffix (``.nii.gz``, ``.nii``, ``.npz``, ``.nc``, ``.h5``) replaced by
    ``suffix``."""
    p = pathlib.Path(output)
    name = p.name
    for s in _OUTPUT_SUFFIXES:
        if name.endswith(s):
            name = name[: -len(s)]
            break
    return p.with_name(name + suffix)


def record_path(output: str | pathlib.Path) -> pathlib.Path:
    """Where the JSON run record of an output goes: ``recon.nii.gz`` → ``recon.json``."""
    return _beside(output, ".json")


def add_png_arguments(parser) -> None:
    """``--png PATH`` / ``--no-png`` (mutually exclusive): where the montage of the output goes."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--png", default=None, metavar="PATH",
                   help="where the PNG montage (axial/coronal/sagittal, to scale, with a colour bar) of the "
                        "output goes (default: OUTPUT with .nii/.nii.gz replaced by .png)")
    g.add_argument("--no-png", action="store_true", help="write no PNG montage")


def png_path(args) -> pathlib.Path | None:
    """The montage path of a run: ``--png``, else ``args.output`` with ``.nii.gz``/``.nii`` replaced by
    ``.png``; ``None`` with ``--no-png``."""
    if getattr(args, "no_png", False):
        return None
    if getattr(args, "png", None):
        return pathlib.Path(args.png)
    return _beside(args.output, ".png")


def check_png(args) -> pathlib.Path | None:
    """Refuse, before any work, a montage path that cannot be written: not named ``.png``, the output
    itself, its JSON record or the ``--save-state`` file, an existing file without ``--overwrite``, a
    folder, or a path in a read-only folder (:func:`~diffrecon.io.check_writable`). Returns
    :func:`png_path`."""
    from ..io import check_writable

    path = png_path(args)
    if path is None:
        return None
    if path.suffix.lower() != ".png":
        raise InputDataError(f"--png {path}: the montage is a PNG image; name it .png")
    taken = [args.output, record_path(args.output)]
    if getattr(args, "save_state", None):
        taken.append(args.save_state)
    if any(path.resolve() == pathlib.Path(t).resolve() for t in taken):
        raise InputDataError(f"--png {path}: that is the output, its record or the --save-state file; "
                             "name another file")
    check_writable(path, getattr(args, "overwrite", False))
    return path


def write_montage(
    args, volume, affine, slice_axis: int | None = None, value_label: str = "value (input units)"
) -> pathlib.Path | None:
    """Write the PNG montage of a reconstructed ``volume`` (3-D, any device; complex shown as magnitude)
    to :func:`png_path` (``None`` with ``--no-png``; call :func:`check_png` before the work).

    The views are the axial, coronal and sagittal central slices in display orientation and to scale,
    from ``affine`` (4×4 voxel-to-mm, the output NIfTI's). An identity ``affine`` (a file that stored
    none) carries no orientation: then, if ``slice_axis`` (the axis the data were acquired in slices
    along) disagrees with it, the axial panel is the slices along ``slice_axis`` shown as stored.
    """
    import logging

    import numpy as np

    from ..datasets.ct_simulation import axial_axis
    from ..viz import save_montage

    path = png_path(args)
    if path is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    title = f"{getattr(args, 'method', 'reconstruct')}: {pathlib.Path(args.output).name}"
    kwargs: dict = {"affine": affine}
    if slice_axis is not None and np.allclose(affine, np.eye(4)) and axial_axis(affine) != slice_axis % 3:
        others = [a for a in range(3) if a != slice_axis % 3]
        kwargs = {"planes": {"axial": slice_axis % 3, "coronal": others[0], "sagittal": others[1]},
                  "superior_axis": slice_axis % 3, "spacing": (1.0, 1.0, 1.0)}
    name = getattr(args, "method", None) or "output"
    save_montage(path, {name: volume}, overwrite=getattr(args, "overwrite", False), value_label=value_label,
                 title=title, **kwargs)
    logging.getLogger("diffrecon").info("wrote the montage %s", path)
    return path


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
