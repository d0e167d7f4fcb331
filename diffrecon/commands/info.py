"""``diffrecon info``: versions, devices and which optional backends are importable."""

from __future__ import annotations

import importlib.util
import platform


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="print versions, devices and available optional backends")
    p.set_defaults(func=run)


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure, do not crash `info`
        return f"installed but fails to import ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "installed"))


def run(args) -> int:
    import torch

    from .. import __version__

    print(f"diffrecon   {__version__}")
    print(f"python      {platform.python_version()} ({platform.platform()})")
    print(f"torch       {torch.__version__} (threads: {torch.get_num_threads()})")
    cuda = torch.cuda.is_available()
    cuda_desc = ("yes: " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                 if cuda else "no")
    print(f"cuda        {cuda_desc}")
    for name, extra in [("monai", "core"), ("nibabel", "core"), ("astra", "ct"), ("sigpy", "mri"),
                        ("h5py", "mri"), ("nilearn", "data"), ("pydicom", "data"),
                        ("diffusers", "diffusers")]:
        print(f"{name:<11} {_version(name)}  [{extra}]")
    if importlib.util.find_spec("astra") is not None:
        try:
            import astra

            print(f"astra cuda  {'yes' if astra.use_cuda() else 'no (CPU 2D projectors only)'}")
        except Exception as exc:  # noqa: BLE001
            print(f"astra cuda  unknown ({exc})")
    return 0
