"""``diffrecon reconstruct``: measurements (``.npz`` sinogram, or MRI k-space) → NIfTI volume."""

from __future__ import annotations

import logging
import zipfile

import numpy as np

from ._common import (
    Timer,
    add_device_argument,
    add_png_arguments,
    alias_help,
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

# canonical (library) names; the aliases tv → admm_tv and mbir → diffusion_mbir are accepted too
CT_METHODS = ("fbp", "admm_tv", "dds", "diffusion_mbir")
MRI_METHODS = ("zerofill", "sense", "admm_tv", "dds", "diffusion_mbir")
METHODS = tuple(dict.fromkeys(CT_METHODS + MRI_METHODS))
log = logging.getLogger("diffrecon")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct a volume from measurements",
        description="Reconstruct a NIfTI volume from a sinogram .npz written by `diffrecon simulate` (or "
        "your own, see docs) with FBP or 3-D anisotropic ADMM-TV, or an MRI k-space file (.npz or "
        "fastMRI-style .h5) with zero filling, CG-SENSE or TV-SENSE (admm_tv); either with DDS or "
        "DiffusionMBIR and a 2-D slice prior (--method dds|diffusion_mbir --prior NAME, resumable with "
        "--save-state/--resume). CT: the output NIfTI gets the header of the volume `diffrecon simulate` "
        "read (stored in the .npz: qform and sform matrices and codes, units, pixdim, dim_info; descrip "
        "names the method; float32, unscaled), or the header and affine of --reference; a sinogram without "
        "a stored header gets its metadata affine alone. A JSON record of the run (method, settings, "
        "seconds) and a PNG montage of the output (axial/coronal/sagittal central slices to scale, with a "
        "colour bar; --png, --no-png) are written next to the output.",
    )
    p.add_argument("input", help="measurement file: sinogram .npz (CT) or k-space .npz/.h5 (MRI)")
    p.add_argument("output", help="output NIfTI volume (.nii.gz)")
    p.add_argument("--method", required=True, type=canonical_method, choices=METHODS,
                   help=f"CT: {', '.join(CT_METHODS)}; MRI k-space: {', '.join(MRI_METHODS)} "
                        f"(admm_tv on k-space is TV-SENSE; {alias_help()})")
    p.add_argument("--filter", default="ramp", help="FBP filter: ramp, shepp-logan, cosine, hann")
    p.add_argument("--lam", type=float, default=None,
                   help="regularisation weight: TV lambda for admm_tv (default: the tuned value), "
                        "Tikhonov weight for sense, absolute TV lambda for dds/diffusion_mbir "
                        "(default: the paper's, rescaled for the exact adjoint)")
    p.add_argument("--rho", type=float, default=None, help="ADMM penalty rho (admm_tv, dds, diffusion_mbir)")
    p.add_argument("--iters", type=int, default=None, help="ADMM iterations")
    p.add_argument("--cg-iters", type=int, default=None, help="CG iterations per ADMM step")
    p.add_argument("--tv-axes", default="all",
                   help="TV axes: all (3-D), slice (across slices only), in-plane")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--reference", default=None, metavar="NIFTI",
                   help="CT: write the output with the header and affine of this NIfTI volume (or DICOM "
                        "series folder) instead of those stored in the sinogram; its shape must equal the "
                        "reconstruction's")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT (and its record and montage) if they exist")
    add_png_arguments(p)
    from . import _diffusion, mri

    _diffusion.add_arguments(p)
    mri.add_reconstruct_arguments(p)
    p.set_defaults(func=run)


def _is_ct_file(path: str) -> bool:
    if not path.endswith(".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "sinogram" in z.files
    except (OSError, ValueError, zipfile.BadZipFile):
        return True  # let the CT loader report the problem precisely


def tv_axes(spec: str, slice_axis: int) -> tuple[int, ...]:
    """Negative volume axes for a TV spec given which axis holds the slices."""
    from ..errors import InputDataError

    all_axes = (-3, -2, -1)
    slice_neg = slice_axis - 3
    if spec == "all":
        return all_axes
    if spec == "slice":
        return (slice_neg,)
    if spec == "in-plane":
        return tuple(a for a in all_axes if a != slice_neg)
    raise InputDataError(f"--tv-axes: expected all, slice or in-plane, found {spec!r}")


def check_options(args) -> None:
    """Refuse, before any file is read, option values no method can use: a non-finite or negative
    ``--lam``, a ``--rho`` that is not positive, ``--steps`` or ``--save-every`` below 1, and an input
    that is neither a sinogram ``.npz`` nor a k-space ``.npz``/``.h5``/``.hdf5`` (it would be reported
    as k-space)."""
    import math
    import os

    from ..errors import FileFormatError, InputDataError

    name = os.fspath(args.input).lower()
    if not name.endswith((".npz", ".h5", ".hdf5")):
        raise FileFormatError(f"{args.input}: expected a sinogram .npz (CT) or a k-space .npz/.h5/.hdf5 "
                              f"(MRI), found suffix {os.path.splitext(name)[1] or '(none)'}")
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise InputDataError(f"--lam: expected a finite weight >= 0, found {args.lam}")
    if args.rho is not None and not (math.isfinite(args.rho) and args.rho > 0):
        raise InputDataError(f"--rho: expected a finite penalty > 0, found {args.rho}")
    if getattr(args, "save_every", 1) < 1:
        raise InputDataError(f"--save-every: expected a number of steps >= 1, found {args.save_every}")
    if getattr(args, "steps", None) is not None and args.steps < 1:
        raise InputDataError(f"--steps: expected a number of sampler steps >= 1, found {args.steps}")


def output_shape(data) -> tuple[int, int, int]:
    """The shape of the volume a CT reconstruction of ``data`` (a :class:`~diffrecon.io.SinogramFile`) has:
    the cone-beam geometry's volume, or the 2-D image with the slice count inserted at the slice axis."""
    if data.geometry.kind == "cone":
        return tuple(int(n) for n in data.geometry.volume_shape)
    shape = [int(n) for n in data.geometry.image_shape]
    shape.insert(data.slice_axis % 3, int(data.sinogram.shape[0]))
    return tuple(shape)


def reference_geometry(path: str, shape: tuple[int, ...]):
    """Affine and header of the ``--reference`` volume, refused unless its shape is ``shape``. A NIfTI
    file is read from its header alone; a folder is read as a DICOM series."""
    import os

    from ..errors import InputDataError
    from ..io.nifti import check_nifti_header

    if os.path.isdir(path):
        from ..io.dicom import load_dicom_series

        ref = load_dicom_series(path)
        ref_shape, affine, header = tuple(ref.data.shape), ref.affine, ref.header
    else:
        img = check_nifti_header(path)
        ref_shape, affine, header = tuple(int(n) for n in img.shape), np.asarray(img.affine), img.header
        if len(ref_shape) == 4 and ref_shape[3] == 1:
            ref_shape = ref_shape[:3]
    if tuple(ref_shape) != tuple(shape):
        raise InputDataError(f"--reference {path}: its shape {tuple(ref_shape)} differs from the "
                             f"reconstruction's {tuple(shape)}; pass the volume the sinogram was made from")
    return np.asarray(affine, dtype=np.float64), header


def run(args) -> int:
    from ..errors import InputDataError
    from ..io import check_writable, load_sinogram, output_header, save_nifti, write_text_atomic
    from ..io.nifti import require_nifti_name

    args.method = canonical_method(args.method)
    check_options(args)
    if not _is_ct_file(args.input):
        if getattr(args, "reference", None):
            raise InputDataError("--reference applies to CT sinograms; k-space reconstructions keep the "
                                 "affine stored in the k-space file")
        from . import mri

        return mri.run_reconstruct(args)
    if args.method not in CT_METHODS:
        raise InputDataError(f"{args.input} holds a CT sinogram; --method must be one of {CT_METHODS}, "
                             f"found {args.method!r}")
    require_nifti_name(args.output)
    check_writable(args.output, args.overwrite)
    check_writable(record_path(args.output), args.overwrite)
    png = check_png(args)
    device = resolve_device(args.device)
    data = load_sinogram(args.input, device=device)
    log.info("%s: %s-beam sinogram %s, %d views, slices along axis %d; %s on %s", args.input,
             data.geometry.kind, tuple(data.sinogram.shape), data.geometry.n_angles, data.slice_axis,
             args.method, device)
    # the output's header and affine: --reference, else the source header stored by simulate, else the
    # metadata affine alone (sinograms written by other tools or by diffrecon before headers were stored)
    affine, header = data.affine, data.header
    if getattr(args, "reference", None):
        affine, header = reference_geometry(args.reference, output_shape(data))
    op = data.operator().to(device)
    if args.method in DIFFUSION_METHODS:
        from . import _diffusion

        prior = _diffusion.prepare(args, device, tuple(data.geometry.image_shape)[-2:])
    settings: dict = {"method": args.method}
    with Timer() as t:
        if args.method == "fbp":
            from ..operators.ct import operator_from_geometry
            from ..recon.analytic import fbp

            vol = fbp(data.sinogram, operator_from_geometry(data.geometry).to(device), filter=args.filter)
            vol = vol.movedim(0, data.slice_axis)
            settings["filter"] = args.filter
        elif args.method in DIFFUSION_METHODS:
            from ..operators.ct import operator_from_geometry
            from ..recon.analytic import fbp
            from . import _diffusion

            rough = None
            if args.image_scale == "auto":
                rough = fbp(data.sinogram, operator_from_geometry(data.geometry).to(device))
            vol, extra = _diffusion.solve(args, prior, data.sinogram, op, "ct", data.geometry, rough,
                                          affine=affine)
            settings.update(extra)
        else:
            from ..recon.classical import admm_tv
            from ..recon.defaults import ct_tv_defaults, intensity_scale

            d = ct_tv_defaults(data.geometry.n_angles)
            settings.update(
                lam=args.lam if args.lam is not None else d["lam_rel"] * intensity_scale(data.sinogram, op),
                rho=args.rho if args.rho is not None else d["rho"],
                n_iter=args.iters if args.iters is not None else d["n_iter"],
                cg_iter=args.cg_iters if args.cg_iters is not None else d["cg_iter"],
                axes=list(tv_axes(args.tv_axes, data.slice_axis)),
            )
            vol = admm_tv(data.sinogram, op, settings["lam"], settings["rho"], settings["n_iter"],
                          settings["cg_iter"], axes=settings["axes"], progress=not args.quiet)
    require_finite(vol)
    if header is not None:
        header = output_header(header, f"diffrecon reconstruct {args.method}")
    save_nifti(args.output, vol, affine, header, overwrite=args.overwrite)
    write_montage(args, vol, affine, data.slice_axis)
    record = {"command": "reconstruct", "input": str(args.input), "output": str(args.output),
              "png": None if png is None else str(png), **settings,
              "geometry": data.geometry.kind, "views": data.geometry.n_angles, "device": str(device),
              "seconds": round(t.seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if getattr(args, "reference", None):
        record["reference"] = str(args.reference)
    log.debug("settings: %s", settings)
    write_text_atomic(record_path(args.output), dump_json(record), args.overwrite)
    print(f"wrote {args.output}{'' if png is None else f' and {png}'} ({args.method}, {t.seconds:.1f} s)")
    return 0
