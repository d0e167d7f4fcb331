"""MRI branches of ``diffrecon simulate --modality mri`` and ``diffrecon reconstruct`` (k-space input).

``add_simulate_arguments`` / ``add_reconstruct_arguments`` add only the MRI-specific options; the shared
ones (``input``, ``output``, ``--seed``, ``--slice-axis``, ``--overwrite``, ``--method``, ``--lam``,
``--rho``, ``--iters``, ``--cg-iters``, ``--tv-axes``, ``--device``, ``--quiet``) belong to the command
parsers. ``run_*`` read MRI options with ``getattr`` defaults, so they also work before the options are
registered.
"""

from __future__ import annotations

import math

import numpy as np

from ._common import (
    Timer,
    canonical_method,
    check_png,
    dump_json,
    peak_rss_mb,
    record_path,
    require_finite,
    resolve_device,
    write_montage,
)
from ._diffusion import DIFFUSION_METHODS

# canonical names (admm_tv = TV-SENSE here); the aliases tv and mbir are accepted (see _common)
MRI_METHODS = ("zerofill", "sense", "admm_tv", "dds", "diffusion_mbir")

# defaults of the MRI solvers (tuned on Colin27 at 4x/8x, 8 coils, 30 dB; see docs/mri.md)
SENSE_DEFAULTS = {"lam": 0.0, "n_iter": 30}
TV_DEFAULTS = {"lam": 3e-3, "rho": 0.1, "n_iter": 40, "cg_iter": 5}


def add_simulate_arguments(parser) -> None:
    """MRI options of ``diffrecon simulate`` (input NIfTI magnitude → multi-coil k-space ``.npz``/``.h5``)."""
    g = parser.add_argument_group("MRI (--modality mri)")
    g.add_argument("--coils", type=int, default=8, help="number of simulated receive coils (default 8)")
    g.add_argument("--acceleration", type=float, default=4.0, help="undersampling factor R (default 4)")
    g.add_argument(
        "--mask",
        default="uniform1d",
        choices=["uniform1d", "equispaced1d", "gaussian1d", "poisson2d", "radial"],
        help="sampling pattern (default uniform1d: random phase-encode lines + centre band)",
    )
    g.add_argument(
        "--center-fraction",
        type=float,
        default=0.08,
        help="fraction of fully sampled centre lines for 1-D masks (default 0.08)",
    )
    g.add_argument("--calib", type=int, default=24, help="calibration box side for poisson2d (default 24)")
    g.add_argument(
        "--snr-db",
        type=float,
        default=30.0,
        help="SNR in dB, 10 log10(P / sigma^2) with P the mean |F S_c x|^2 over slices, coils and the full "
        "k-space grid and E|noise|^2 = sigma^2 (default 30; see docs/mri.md)",
    )
    g.add_argument("--no-phase", action="store_true", help="do not apply a smooth random image phase")
    g.add_argument(
        "--slices",
        default=None,
        metavar="START:STOP",
        help="simulate only these slices along the slice axis (the affine is shifted to match)",
    )


def add_reconstruct_arguments(parser) -> None:
    """MRI options of ``diffrecon reconstruct`` (k-space ``.npz``/``.h5`` → NIfTI)."""
    g = parser.add_argument_group("MRI (k-space input)")
    g.add_argument(
        "--maps",
        default="auto",
        choices=["auto", "stored", "espirit"],
        help="coil maps for sense/tv: stored in the file, ESPIRiT from the k-space centre, or auto "
        "(stored if present, else ESPIRiT)",
    )
    g.add_argument(
        "--calib-width",
        default="auto",
        metavar="N|AxB|auto",
        help="ESPIRiT calibration box, N x N or A (kx) x B (ky); it must be fully sampled. Default auto: the "
        "mask's fully sampled centre, at most 24 per axis (1-D line masks: min(kx, 24) x the centre lines)",
    )
    g.add_argument(
        "--kernel-width",
        default="auto",
        metavar="K|AxB|auto",
        help="ESPIRiT kernel width (or A x B); each side needs 2 <= k <= (c + 1) // 2 for a calibration side "
        "c. Default auto: min(6, (c + 1) // 3) per axis (6 for a 24-wide box)",
    )


def _slice_axis(spec, affine) -> int:
    from ..datasets.ct_simulation import axial_axis
    from ..errors import InputDataError

    spec = "auto" if spec is None else str(spec)
    if spec == "auto":
        return axial_axis(affine)
    if spec in ("0", "1", "2"):
        return int(spec)
    raise InputDataError(f"--slice-axis: expected 0, 1, 2 or auto, found {spec!r}")


def _parse_slices(spec: str | None, n: int) -> tuple[int, int]:
    from ..errors import InputDataError

    if spec is None:
        return 0, n
    try:
        a, b = spec.split(":")
        start = int(a) if a else 0
        stop = int(b) if b else n
    except ValueError as exc:
        raise InputDataError(f"--slices: expected START:STOP, found {spec!r}") from exc
    if not 0 <= start < stop <= n:
        raise InputDataError(f"--slices: expected 0 <= START < STOP <= {n}, found {spec!r}")
    return start, stop


def run_simulate(args) -> int:
    """``diffrecon simulate --modality mri INPUT.nii.gz OUTPUT.npz``: write simulated multi-coil k-space."""
    from ..datasets.mri_simulation import simulate_multicoil
    from ..io import load_volume
    from ..io.atomic import check_writable, write_text_atomic
    from ..io.kspace import save_kspace

    overwrite = bool(getattr(args, "overwrite", False))
    check_writable(args.output, overwrite)
    check_writable(record_path(args.output), overwrite)
    vol = load_volume(args.input)  # a NIfTI file, or a folder holding one DICOM series
    axis = _slice_axis(getattr(args, "slice_axis", "auto"), vol.affine)
    start, stop = _parse_slices(getattr(args, "slices", None), int(vol.data.shape[axis]))
    data = vol.data.narrow(axis, start, stop - start)
    shift = np.eye(4)
    shift[axis, 3] = start  # voxel index 0 of the subset is index `start` of the source
    affine = vol.affine @ shift
    seed = int(getattr(args, "seed", 0))
    sim = simulate_multicoil(
        data,
        n_coils=int(getattr(args, "coils", 8)),
        acceleration=float(getattr(args, "acceleration", 4.0)),
        mask=getattr(args, "mask", "uniform1d"),
        center_fraction=float(getattr(args, "center_fraction", 0.08)),
        calib=int(getattr(args, "calib", 24)),
        snr_db=float(getattr(args, "snr_db", 30.0)),
        phase=not bool(getattr(args, "no_phase", False)),
        slice_axis=axis,
        affine=affine,
        seed=seed,
    )
    meta = {
        "modality": "mri",
        "source": str(args.input),
        "slice_axis": axis,
        "slices": [start, stop],
        "coils": int(sim.maps.shape[1]),
        "mask": getattr(args, "mask", "uniform1d"),
        "acceleration_requested": float(getattr(args, "acceleration", 4.0)),
        "acceleration": sim.acceleration,
        "snr_db": sim.snr_db,
        "noise_std": sim.noise_std,
        "intensity_scale": sim.scale,
        "phase": not bool(getattr(args, "no_phase", False)),
        "seed": seed,
    }
    save_kspace(
        args.output,
        sim.kspace,
        mask=sim.mask,
        maps=sim.maps,
        target=sim.magnitude,
        affine=affine,
        slice_axis=axis,
        attrs={k: v for k, v in meta.items() if k not in ("slice_axis", "slices")},
        overwrite=overwrite,
        header=vol.header,
    )
    write_text_atomic(
        record_path(args.output),
        dump_json({"command": "simulate", **meta, "affine": affine.tolist()}),
        overwrite,
    )
    print(
        f"wrote {args.output}: k-space {tuple(sim.kspace.shape)} (slices, coils, kx, ky), "
        f"{meta['mask']} mask at {sim.acceleration:.3f}x, SNR {sim.snr_db:g} dB, slices along axis {axis}"
    )
    return 0


def _x(sides) -> str:
    return "x".join(str(int(v)) for v in sides)


def _sides_or_auto(value, flag: str, minimum: int) -> tuple[int, int] | None:
    """``auto`` → None; ``N`` → (N, N); ``AxB`` → (A, B) (rows kx × columns ky), each >= ``minimum``."""
    from ..errors import InputDataError

    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        return None
    parts = text.split("x")
    try:
        sides = tuple(int(p) for p in parts)
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < minimum:
        raise InputDataError(
            f"{flag}: expected auto, an integer N >= {minimum} or AxB (kx x ky), found {value!r}"
        )
    return (sides[0], sides[0]) if len(sides) == 1 else sides  # type: ignore[return-value]


def espirit_settings(args, mask) -> tuple[tuple[int, int], tuple[int, int]]:
    """Calibration box and kernel sides ``((c_kx, c_ky), (k_kx, k_ky))`` for ESPIRiT from the MRI options.

    ``--calib-width auto`` (default) is :func:`~diffrecon.operators.coils.calibration_region` of the
    sampling mask (its fully sampled centre, at most 24 per axis); an explicit N is an N×N box and AxB
    an A (kx) × B (ky) box, refused unless the mask samples it fully. ``--kernel-width auto`` (default)
    is :func:`~diffrecon.operators.coils.auto_kernel_width` of those sides, min(6, (c+1)//3); an
    explicit K (or AxB) must satisfy 2 <= k <= (c+1)//2 on each side.

    Args:
        args: parsed options (``calib_width``, ``kernel_width``: ``"auto"``, ``"N"`` or ``"AxB"``).
        mask: the file's boolean sampling mask ``(kx, ky)`` or ``(S, kx, ky)``.

    Raises:
        InputDataError: a value that is neither auto nor a positive integer, a box the mask does not
            sample fully (the message gives the fully sampled width), a centre too small for ESPIRiT,
            or a kernel that does not fit the box.
    """
    from ..errors import InputDataError
    from ..operators.coils import (
        MIN_KERNEL_WIDTH,
        auto_kernel_width,
        box_fully_sampled,
        calibration_region,
        fully_sampled_box,
        fully_sampled_width,
    )

    raw_cw, raw_kw = getattr(args, "calib_width", "auto"), getattr(args, "kernel_width", "auto")
    cw = _sides_or_auto(raw_cw, "--calib-width", 1)
    kw = _sides_or_auto(raw_kw, "--kernel-width", MIN_KERNEL_WIDTH)
    if cw is None:
        calib = calibration_region(mask)
    else:
        if not box_fully_sampled(mask, cw):
            full = fully_sampled_width(mask)
            raise InputDataError(
                f"--calib-width {raw_cw}: the central {_x(cw)} box is not fully sampled; the mask's fully "
                f"sampled centre is {full} wide ({_x(fully_sampled_box(mask))} "
                f"as a box): use --calib-width {full} or less, or omit it (auto)"
            )
        calib = cw
    if kw is None:
        try:
            kernel = auto_kernel_width(calib)
        except InputDataError as exc:
            raise InputDataError(f"--calib-width {raw_cw}: {exc}") from exc
    else:
        kernel = kw
        if any(2 * k - 1 > c for k, c in zip(kernel, calib, strict=True)):
            most = _x([(c + 1) // 2 for c in calib])
            fix = (
                f"use --kernel-width {most} or less, or omit it (auto)"
                if min(calib) >= 2 * MIN_KERNEL_WIDTH - 1
                else f"the box must be at least {2 * MIN_KERNEL_WIDTH - 1} wide: raise --calib-width"
            )
            raise InputDataError(
                f"--kernel-width {raw_kw}: ESPIRiT needs 2k-1 <= the calibration side, found a "
                f"{_x(calib)} box; {fix}"
            )
    return tuple(calib), tuple(kernel)


def run_reconstruct(args) -> int:
    """``diffrecon reconstruct --method zerofill|sense|admm_tv|dds|diffusion_mbir KSPACE.(npz|h5) OUT.nii.gz``
    (``tv``, ``mbir``: aliases of ``admm_tv``, ``diffusion_mbir``)."""
    from ..errors import InputDataError
    from ..io.atomic import check_writable, write_text_atomic
    from ..io.kspace import load_kspace
    from ..io.nifti import output_header, require_nifti_name, save_nifti
    from ..metrics import psnr
    from ..operators import espirit_maps
    from ..operators.coils import absorb_image_phase
    from ..recon.mri import cg_sense, tv_sense, zero_filled_rss

    require_nifti_name(args.output)
    method = canonical_method(args.method)
    if method not in MRI_METHODS:
        raise InputDataError(
            f"{args.input} holds MRI k-space; --method must be one of {MRI_METHODS}, found {method!r}"
        )
    overwrite = bool(getattr(args, "overwrite", False))
    check_writable(args.output, overwrite)
    check_writable(record_path(args.output), overwrite)
    png = check_png(args)  # refused before any work, like the output and its record
    device = resolve_device(getattr(args, "device", "auto"))
    data = load_kspace(args.input)
    prior = None
    if method in DIFFUSION_METHODS:  # check the prior and options before ESPIRiT or any other work
        from . import _diffusion

        prior = _diffusion.prepare(args, device, tuple(data.kspace.shape[-2:]))
    k = data.kspace.to(device)
    quiet = bool(getattr(args, "quiet", False))
    settings: dict = {"method": method}
    with Timer() as t:
        if method == "zerofill":
            img = zero_filled_rss(k)
        else:
            choice = getattr(args, "maps", "auto")
            if choice == "stored" and data.maps is None:
                raise InputDataError(f"{args.input} stores no coil maps; use --maps espirit")
            if choice == "stored" or (choice == "auto" and data.maps is not None):
                maps, settings["maps"] = data.maps, "stored"
            else:
                calib, kernel = espirit_settings(args, data.mask)
                maps = espirit_maps(data.kspace, calib_width=calib, kernel_width=kernel)
                settings["maps"] = f"espirit (calib {_x(calib)}, kernel {_x(kernel)})"
                settings.update(calib_width=list(calib), kernel_width=list(kernel))
                if method in DIFFUSION_METHODS:  # real (magnitude) priors: the object real in the maps' basis
                    maps = absorb_image_phase(maps, data.kspace, calib)
                    settings["maps"] += " with the low-resolution image phase"
            maps = maps.to(device)
            mask = data.mask.to(device)
            lam = getattr(args, "lam", None)
            iters = getattr(args, "iters", None)
            if method in DIFFUSION_METHODS:
                from ..operators import MultiCoilMRI
                from . import _diffusion

                # the slice priors are real (magnitude) images, as in DiffusionMBIR: real image domain
                shared = maps.ndim == 3
                op = MultiCoilMRI(maps, mask, real_input=True, n_slices=k.shape[0] if shared else None)
                rough = zero_filled_rss(k) if args.image_scale == "auto" else None
                from ..operators.framing import slice_first_affine

                affine = None if data.affine is None else slice_first_affine(data.affine, data.slice_axis)
                img, extra = _diffusion.solve(args, prior, k, op, "mri", None, rough, affine=affine)
                settings.update(extra)
            elif method == "sense":
                settings.update(
                    lam=SENSE_DEFAULTS["lam"] if lam is None else float(lam),
                    n_iter=SENSE_DEFAULTS["n_iter"] if iters is None else int(iters),
                )
                img = cg_sense(
                    k, maps, mask, lam=settings["lam"], n_iter=settings["n_iter"], progress=not quiet
                )
            else:
                spec = getattr(args, "tv_axes", "all")
                axes = {"all": (-3, -2, -1), "slice": (-3,), "in-plane": (-2, -1)}.get(spec)
                if axes is None:
                    raise InputDataError(f"--tv-axes: expected all, slice or in-plane, found {spec!r}")
                rho, cgi = getattr(args, "rho", None), getattr(args, "cg_iters", None)
                settings.update(
                    lam_relative=TV_DEFAULTS["lam"] if lam is None else float(lam),
                    rho=TV_DEFAULTS["rho"] if rho is None else float(rho),
                    n_iter=TV_DEFAULTS["n_iter"] if iters is None else int(iters),
                    cg_iter=TV_DEFAULTS["cg_iter"] if cgi is None else int(cgi),
                    tv_axes=spec,
                )
                img = tv_sense(
                    k,
                    maps,
                    mask,
                    lam=settings["lam_relative"],
                    rho=settings["rho"],
                    n_iter=settings["n_iter"],
                    cg_iter=settings["cg_iter"],
                    axes=axes,
                    progress=not quiet,
                )
            if method not in DIFFUSION_METHODS:  # the diffusion methods reconstruct real images already
                img = img.abs()
    img = img.float().cpu()
    record = {
        "command": "reconstruct",
        "input": str(args.input),
        "output": str(args.output),
        **settings,
        "acceleration": data.acceleration,
        "kspace_shape": list(data.kspace.shape),
        "device": str(device),
        "seconds": round(t.seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    require_finite(img)
    if data.target is not None:
        value = psnr(img, data.target, data_range=float(data.target.max()))
        record["psnr_db"] = round(value, 3) if math.isfinite(value) else None
    volume = img.movedim(0, data.slice_axis)
    affine = data.affine if data.affine is not None else np.eye(4)
    if data.affine is None:
        record["affine"] = "identity (none stored in the input)"
    header = None if data.header is None else output_header(data.header, f"diffrecon reconstruct {method}")
    save_nifti(args.output, volume, affine, header, overwrite=overwrite)
    write_montage(args, volume, affine, data.slice_axis, value_label="magnitude (input units)")
    record["png"] = None if png is None else str(png)
    write_text_atomic(record_path(args.output), dump_json(record), overwrite)
    extra = f", PSNR {record['psnr_db']} dB vs stored target" if "psnr_db" in record else ""
    print(f"wrote {args.output}{'' if png is None else f' and {png}'} ({method}, {t.seconds:.1f} s{extra})")
    return 0
