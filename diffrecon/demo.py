"""The main job: sparse-view CT of a volume, reconstructed by every method, with figures and metrics.

``run_demo`` simulates ``views``-view parallel-beam CT of a bundled volume slice by slice (axial
slices), reconstructs it with FBP and 3-D ADMM-TV, and writes into ``out_dir``:

* ``truth.nii.gz``, ``<method>.nii.gz``: volumes with a shared affine;
* ``sinogram.npz``: the simulated measurements with their geometry (readable by ``diffrecon reconstruct``);
* ``montage.png``: axial/coronal/sagittal central slices, truth and each method, with |error| maps;
* ``metrics.json``: ``{"methods": {name: {"psnr": {plane: dB}, "ssim": {...}, "nfe": int, "seconds": s,
  "peak_rss_mb": MiB}}, "settings": {...}}``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable

import numpy as np
import torch

from .commands._common import Timer, peak_rss_mb
from .errors import InputDataError, OutputExistsError
from .io import save_nifti, save_sinogram, write_text_atomic
from .metrics import plane_metrics

OUTPUT_FILES = ("truth.nii.gz", "sinogram.npz", "fbp.nii.gz", "admm_tv.nii.gz", "montage.png", "metrics.json")

# Array axes of the demo volume (z, y, x) and the planes they give.
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def phantom_volume(size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """The 3-D Shepp–Logan phantom ``(z, y, x)`` and an affine mapping array axes to RAS millimetres."""
    from .datasets.phantoms import shepp_logan_3d

    vol = shepp_logan_3d((size, size, size))
    # array axis 0 → z (superior), axis 1 → rows run downwards (−y, anterior up), axis 2 → x
    affine = np.array([[0, 0, 1, 0], [0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(vol.shape) - 1) / 2.0
    return vol, affine


def run_demo(
    out_dir: str | pathlib.Path,
    views: int = 8,
    size: int = 64,
    noise: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the demo and return the metrics dictionary (also written to ``metrics.json``)."""
    from .datasets.ct_simulation import make_geometry, simulate_ct
    from .operators.ct import operator_from_geometry
    from .operators.slicewise import SliceWise
    from .recon.classical import admm_tv
    from .recon.defaults import ct_tv_defaults, intensity_scale
    from .recon.analytic import fbp
    from .viz import save_montage

    out = pathlib.Path(out_dir)
    if not overwrite:
        clash = [f for f in OUTPUT_FILES if (out / f).exists()]
        if clash:
            raise OutputExistsError(f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them")
    if size < 8:
        raise InputDataError(f"demo: expected a volume size >= 8, found {size}")
    device = torch.device(device)
    truth, affine = phantom_volume(size)
    truth = truth.to(device)
    geom = make_geometry(tuple(truth.shape[1:]), "parallel", views)
    sim = simulate_ct(truth, geom, slice_axis=0, noise=noise, seed=seed)
    op2d = operator_from_geometry(geom).to(device)
    op = SliceWise(op2d, axis=0).to(device)
    log(f"simulated {views}-view parallel-beam CT of a {tuple(truth.shape)} phantom (noise {noise})")

    results: dict[str, dict] = {}
    volumes: dict[str, torch.Tensor] = {"truth": truth}

    def record(name: str, vol: torch.Tensor, seconds: float, nfe: int, extra: dict | None = None) -> None:
        m = plane_metrics(vol, truth, PLANES)
        results[name] = {"psnr": m["psnr"], "ssim": m["ssim"], "nfe": nfe, "seconds": round(seconds, 3),
                         "peak_rss_mb": round(peak_rss_mb(), 1), **(extra or {})}
        volumes[name] = vol
        log(f"{name:>15}: PSNR " + " / ".join(f"{v:.2f}" for v in m["psnr"].values())
            + f" dB (axial/coronal/sagittal), {seconds:.1f} s")

    with Timer() as t:
        x_fbp = fbp(sim.sinogram, op2d, filter="ramp")
    record("fbp", x_fbp, t.seconds, 0, {"filter": "ramp"})

    d = ct_tv_defaults(views)
    lam = d["lam_rel"] * intensity_scale(sim.sinogram, op)
    with Timer() as t:
        x_tv = admm_tv(sim.sinogram, op, lam, d["rho"], d["n_iter"], d["cg_iter"], axes=(-3, -2, -1),
                       progress=progress)
    record("admm_tv", x_tv, t.seconds, 0, {"lam": lam, "lam_rel": d["lam_rel"], "rho": d["rho"],
                                            "n_iter": d["n_iter"], "cg_iter": d["cg_iter"], "tv_axes": "zyx"})

    out.mkdir(parents=True, exist_ok=True)
    save_nifti(out / "truth.nii.gz", truth, affine, overwrite=overwrite)
    for name in results:
        save_nifti(out / f"{name}.nii.gz", volumes[name], affine, overwrite=overwrite)
    save_sinogram(out / "sinogram.npz", sim.sinogram, geom,
                  {"modality": "ct", "slice_axis": 0, "volume_shape": list(truth.shape), "affine": affine,
                   "noise_relative": noise, "noise_sigma": sim.noise_sigma, "seed": seed, "source": "shepp_logan_3d"},
                  overwrite=overwrite)
    titles = {n: f"{n}\n{np.mean(list(r['psnr'].values())):.1f} dB" for n, r in results.items()}
    save_montage(out / "montage.png", volumes, reference="truth", planes=PLANES, titles=titles, overwrite=overwrite)
    metrics = {"methods": results,
               "settings": {"volume": "shepp_logan_3d", "shape": list(truth.shape), "views": views,
                            "geometry": "parallel", "noise": noise, "seed": seed, "device": str(device),
                            "torch_threads": torch.get_num_threads()}}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n", overwrite)
    log(f"wrote {', '.join(OUTPUT_FILES)} to {out}")
    return metrics
