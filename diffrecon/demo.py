"""The main job: sparse-view CT of a head volume, reconstructed by every method, with figures and metrics.

``run_demo`` simulates ``views``-view parallel-beam CT of the held-out sample head volume (Colin27,
never seen by the bundled prior) slice by slice along its axial axis, reconstructs it with

* ``fbp``: filtered back-projection (ramp filter);
* ``admm_tv``: 3-D anisotropic ADMM-TV with the weight tuned on this volume (``recon/defaults.py``);
* ``dds``: DDS with the bundled 2-D slice prior (:class:`~diffrecon.recon.diffusion.DDS`);
* ``diffusion_mbir``: DiffusionMBIR with the same prior (:class:`~diffrecon.recon.diffusion.DiffusionMBIR`)
  at a CPU step count (the paper's 2000 steps need a GPU; the settings are in ``metrics.json``),

and writes into ``out_dir``:

* ``truth.nii.gz``, ``<method>.nii.gz``: volumes with the sample's affine;
* ``sinogram.npz``: the simulated measurements with their geometry (readable by ``diffrecon reconstruct``);
* ``montage.png``: axial/coronal/sagittal central slices, truth and each method, with |error| maps;
* ``metrics.json``: ``{"methods": {name: {"psnr": {plane: dB}, "ssim": {...}, "nfe": int, "seconds": s,
  "peak_memory_mb": MiB, "settings": {...}}}, "settings": {...}}``; on CUDA the memory is the peak
  allocated during that method, on CPU the process's peak RSS so far (it only grows).

``volume="phantom"`` uses the 3-D Shepp–Logan phantom instead (any ``size``; classical methods only,
as the bundled prior knows heads, not phantoms).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ._runtime import Timer, peak_rss_mb
from .errors import InputDataError, OutputExistsError
from .io import save_nifti, save_sinogram, write_text_atomic
from .metrics import plane_metrics

METHODS = ("fbp", "admm_tv", "dds", "diffusion_mbir")
DIFFUSION_METHODS = ("dds", "diffusion_mbir")
VOLUMES = ("sample", "phantom")

# Array axes of the phantom volume (z, y, x) and the planes they give.
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}
# The sample volume is RAS: axis 0 left→right, 1 posterior→anterior, 2 inferior→superior.
RAS_PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


@dataclasses.dataclass
class DemoVolume:
    """A ground-truth volume and how to slice and show it."""

    name: str
    truth: torch.Tensor
    affine: np.ndarray
    slice_axis: int  # the axis the CT acquires slices along (axial)
    planes: dict[str, int]
    superior_axis: int
    anterior_axis: int | None


def phantom_volume(size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """The 3-D Shepp–Logan phantom ``(z, y, x)`` and an affine mapping array axes to RAS millimetres."""
    from .datasets.phantoms import shepp_logan_3d

    vol = shepp_logan_3d((size, size, size))
    # array axis 0 → z (superior), axis 1 → rows run downwards (−y, anterior up), axis 2 → x
    affine = np.array([[0, 0, 1, 0], [0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(vol.shape) - 1) / 2.0
    return vol, affine


def demo_volume(name: str = "sample", size: int = 64) -> DemoVolume:
    """The demo's ground truth: ``"sample"`` (the bundled 64³ head) or ``"phantom"``
    (Shepp–Logan, ``size``³)."""
    if name == "sample":
        from .datasets import sample_volume

        vol, affine = sample_volume()
        return DemoVolume("colin27_t1_64", vol, affine, 2, dict(RAS_PLANES), 2, 1)
    if name == "phantom":
        if size < 8:
            raise InputDataError(f"demo: expected a phantom size >= 8, found {size}")
        vol, affine = phantom_volume(size)
        return DemoVolume("shepp_logan_3d", vol, affine, 0, dict(PLANES), 0, None)
    raise InputDataError(f"demo: volume must be one of {VOLUMES}, found {name!r}")


def output_files(methods: Sequence[str]) -> tuple[str, ...]:
    return ("truth.nii.gz", "sinogram.npz", *(f"{m}.nii.gz" for m in methods), "montage.png", "metrics.json")


def _check_methods(methods: Sequence[str] | None, volume: str) -> tuple[str, ...]:
    if methods is None:
        return METHODS if volume == "sample" else ("fbp", "admm_tv")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputDataError(f"demo: methods must be among {METHODS}, found {list(methods)}")
    return tuple(dict.fromkeys(methods))


def run_demo(
    out_dir: str | pathlib.Path,
    views: int = 8,
    volume: str = "sample",
    size: int = 64,
    methods: Sequence[str] | None = None,
    prior: str = "head-64",
    dds_steps: int | None = None,
    mbir_steps: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the demo and return the metrics dictionary (also written to ``metrics.json``).

    Args:
        out_dir: output folder (created).
        views: projection count of the sparse-view parallel-beam acquisition over [0°, 180°).
        volume: ``"sample"`` (held-out head) or ``"phantom"``.
        size: phantom size (``volume="phantom"`` only).
        methods: subset of :data:`METHODS` (default: all four for the head, FBP and ADMM-TV for the phantom).
        prior: bundled prior name or checkpoint path for the diffusion methods.
        dds_steps, mbir_steps: override the step counts of :data:`~diffrecon.recon.defaults.DEMO_STEPS`.
        noise: relative Gaussian sinogram noise (σ = noise · max|y|).
        seed: noise and sampler seed.
        device: where everything runs.
        overwrite: replace existing outputs.
        progress: progress bars.
        log: where the per-method lines go.
    """
    from .datasets.ct_simulation import simulate_ct
    from .recon import admm_tv, fbp
    from .recon.defaults import DEMO_STEPS, ct_tv_defaults, intensity_scale
    from .recon.problems import ct_operator
    from .viz import save_montage

    methods = _check_methods(methods, volume)
    out = pathlib.Path(out_dir)
    files = output_files(methods)
    if not overwrite:
        clash = [f for f in files if (out / f).exists()]
        if clash:
            raise OutputExistsError(
                f"{out} already holds {', '.join(clash)}; pass --overwrite to replace them"
            )
    if views < 1:
        raise InputDataError(f"demo: expected at least one view, found {views}")
    device = torch.device(device)
    if volume == "sample" and size != 64:
        raise InputDataError("demo: --size applies to --volume phantom; the sample volume is 64³")
    vol = demo_volume(volume, size)
    truth = vol.truth.to(device)
    plane_shape = tuple(s for i, s in enumerate(truth.shape) if i != vol.slice_axis)
    op = ct_operator(plane_shape, views, "parallel", slice_axis=vol.slice_axis,
                     n_slices=truth.shape[vol.slice_axis]).to(device)
    op2d, geom = op.op2d, op.op2d.geometry
    solvers = {}
    if any(m in DIFFUSION_METHODS for m in methods):
        # build the diffusion solvers first so a missing or mismatched prior fails before any work
        from .priors import load
        from .recon import DDS, DiffusionMBIR

        net = load(prior, device=device)
        classes = {"dds": DDS, "diffusion_mbir": DiffusionMBIR}
        steps = {"dds": dds_steps, "diffusion_mbir": mbir_steps}
        for m in (m for m in methods if m in DIFFUSION_METHODS):
            n = steps[m] or DEMO_STEPS[m]
            solvers[m] = classes[m].default_ct(net, n_views=views, steps=n, seed=seed, progress=progress)
            solvers[m].validate(torch.zeros(op.out_shape, device=device), op)
    sim = simulate_ct(truth, geom, slice_axis=vol.slice_axis, noise=noise, seed=seed)
    log(f"simulated {views}-view parallel-beam CT of {vol.name} {tuple(truth.shape)} (noise {noise})")

    results: dict[str, dict] = {}
    volumes: dict[str, torch.Tensor] = {"truth": truth}

    def record(name: str, x: torch.Tensor, seconds: float, nfe: int, settings: dict) -> None:
        m = plane_metrics(x, truth, vol.planes)
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb())
        results[name] = {"psnr": m["psnr"], "ssim": m["ssim"], "nfe": nfe, "seconds": round(seconds, 3),
                         "peak_memory_mb": round(peak, 1),
                         "peak_memory_kind": ("cuda max allocated during the method" if device.type == "cuda"
                                              else "process peak RSS so far (includes earlier steps)"),
                         "settings": settings}
        volumes[name] = x
        log(f"{name:>15}: PSNR " + " / ".join(f"{v:.2f}" for v in m["psnr"].values())
            + f" dB ({'/'.join(vol.planes)}), NFE {nfe}, {seconds:.1f} s")

    for name in methods:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if name == "fbp":
            with Timer() as t:
                x = fbp(sim.sinogram, op2d, filter="ramp").movedim(0, vol.slice_axis)
            record(name, x, t.seconds, 0, {"filter": "ramp"})
        elif name == "admm_tv":
            d = ct_tv_defaults(views, "head" if volume == "sample" else "phantom")
            lam = d["lam_rel"] * intensity_scale(sim.sinogram, op)
            with Timer() as t:
                x = admm_tv(sim.sinogram, op, lam, d["rho"], d["n_iter"], d["cg_iter"], axes=(-3, -2, -1),
                            progress=progress)
            record(name, x, t.seconds, 0, {"lam": lam, **d, "tv_axes": "zyx"})
        else:
            with Timer() as t:
                x, rec = solvers[name](sim.sinogram, op)
            record(name, x, t.seconds, rec.nfe, {"prior": prior, **rec.settings})

    out.mkdir(parents=True, exist_ok=True)
    save_nifti(out / "truth.nii.gz", truth, vol.affine, overwrite=overwrite)
    for name in results:
        save_nifti(out / f"{name}.nii.gz", volumes[name], vol.affine, overwrite=overwrite)
    save_sinogram(out / "sinogram.npz", sim.sinogram, geom,
                  {"modality": "ct", "slice_axis": vol.slice_axis, "volume_shape": list(truth.shape),
                   "affine": vol.affine, "noise_relative": noise, "noise_sigma": sim.noise_sigma,
                   "seed": seed, "source": vol.name},
                  overwrite=overwrite)
    titles = {n: f"{n}\n{np.mean(list(r['psnr'].values())):.1f} dB" for n, r in results.items()}
    save_montage(out / "montage.png", volumes, reference="truth", planes=vol.planes, titles=titles,
                 superior_axis=vol.superior_axis, anterior_axis=vol.anterior_axis, overwrite=overwrite)
    metrics = {"methods": results,
               "settings": {"volume": vol.name, "shape": list(truth.shape), "slice_axis": vol.slice_axis,
                            "planes": vol.planes, "views": views, "geometry": "parallel", "noise": noise,
                            "seed": seed, "device": str(device), "torch_threads": torch.get_num_threads()}}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n", overwrite)
    log(f"wrote {', '.join(files)} to {out}")
    return metrics
