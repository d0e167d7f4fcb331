"""``diffrecon simulate``: NIfTI volume or DICOM series → simulated measurements (CT sinogram + geometry
and the source's NIfTI header in ``.npz``)."""

from __future__ import annotations

from ._common import dump_json, record_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate CT (or MRI) measurements of a NIfTI volume or a DICOM series",
        description="Simulate measurements of a NIfTI volume or of a folder holding one DICOM series (read "
        "in RAS+ like a NIfTI conversion); the source's NIfTI header travels with the measurements, so "
        "`diffrecon reconstruct` writes the volume with the source's qform/sform, codes, units and spacing. "
        "CT: every slice along --slice-axis is projected with a parallel- or fan-beam geometry and white "
        "Gaussian noise is added; the sinogram and its geometry are written to OUTPUT.npz. MRI: multi-coil "
        "k-space with simulated coil maps, an undersampling mask and complex noise at --snr-db, in a "
        "k-space .npz/.h5 (see docs/mri.md).",
    )
    p.add_argument("input", help="input NIfTI volume (.nii or .nii.gz), or a folder holding one DICOM "
                                 "series")
    p.add_argument("output", help="output measurement file (.npz)")
    p.add_argument("--modality", choices=["ct", "mri"], default="ct")
    g = p.add_argument_group("CT (--modality ct)")
    g.add_argument("--geometry", choices=["parallel", "fan"], default="parallel", help="CT beam geometry")
    g.add_argument("--views", type=int, default=8, help="number of projection angles (default 8)")
    g.add_argument("--arc", type=float, default=None,
                   help="angular range in degrees covered by the views (default 180 parallel, 360 fan)")
    g.add_argument("--limited-angle", type=float, default=None, metavar="DEGREES",
                   help="limited-angle CT: views every 1 degree over [0, DEGREES) instead of --views")
    g.add_argument("--detectors", type=int, default=None, help="detector bins (default: cover the image)")
    g.add_argument("--noise", type=float, default=0.0,
                   help="Gaussian noise sigma relative to the largest sinogram value (default 0)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--slice-axis", default="auto",
                   help="voxel axis to slice along: 0, 1, 2 or auto "
                        "(the superior-inferior axis from the affine)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    from . import mri

    mri.add_simulate_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.modality == "mri":
        from . import mri

        return mri.run_simulate(args)
    from ..datasets.ct_simulation import axial_axis, make_geometry, simulate_ct
    from ..errors import InputDataError
    from ..io import check_writable, load_volume, save_sinogram, write_text_atomic

    check_writable(args.output, args.overwrite)
    check_writable(record_path(args.output), args.overwrite)
    vol = load_volume(args.input)  # a NIfTI file, or a folder holding one DICOM series
    if args.slice_axis == "auto":
        axis = axial_axis(vol.affine)
    elif args.slice_axis in ("0", "1", "2"):
        axis = int(args.slice_axis)
    else:
        raise InputDataError(f"--slice-axis: expected 0, 1, 2 or auto, found {args.slice_axis!r}")
    image_shape = tuple(s for i, s in enumerate(vol.data.shape) if i != axis)
    # refuses, before any array is made, view/bin counts whose sinograms would not fit in memory
    geom = make_geometry(image_shape, args.geometry, args.views, args.limited_angle, args.arc, args.detectors,
                         n_slices=int(vol.data.shape[axis]))
    sim = simulate_ct(vol.data, geom, slice_axis=axis, noise=args.noise, seed=args.seed)
    meta = {
        "modality": "ct",
        "source": str(args.input),
        "slice_axis": axis,
        "volume_shape": list(vol.data.shape),
        "affine": vol.affine.tolist(),
        "noise_relative": args.noise,
        "noise_sigma": sim.noise_sigma,
        "seed": args.seed,
    }
    save_sinogram(args.output, sim.sinogram, geom, meta, overwrite=args.overwrite, header=vol.header)
    write_text_atomic(record_path(args.output), dump_json({"command": "simulate", **meta,
                                                            "geometry": geom.to_dict()}), args.overwrite)
    print(f"wrote {args.output}: sinogram {tuple(sim.sinogram.shape)} ({geom.kind}, {geom.n_angles} views, "
          f"slices along axis {axis}, noise sigma {sim.noise_sigma:.4g})")
    return 0
