"""Every ``diffrecon`` command on a corpus of bad inputs (issue 19, deliverable 4).

Each case runs the command in-process through :func:`diffrecon.cli.main` and asserts the exact exit
status (1 for a refused input, 2 for a usage error), that stderr is one line starting with
``diffrecon CMD: error:`` and naming what was wrong, that no ``Traceback`` appears anywhere, and that
no file was written or replaced. The rows of the audit each case covers are given in its id
(``r1`` … ``r10``):

1. outputs replaced without ``--overwrite`` (train-prior runs and exports);
2. HSI data outside the assumed value range;  3. NetCDF dims that cannot be matched by name;
4. ``--save-state`` equal to the output or an existing file;
5. resume states of another run, other data or a tampered step;  6. non-finite results;
7. SIGTERM (:func:`test_sigterm_is_one_line_and_leaves_nothing`);
8. sizes that would not fit in memory, refused before allocating;
9. nonsense numbers and complex volumes;  10. raw tracebacks: devices, corrupt files, HDF5 groups,
   outputs that are folders or in read-only folders, 2-D variables.

Inputs are tiny (two 8 x 8 slices; a random-weight 8 x 8 denoiser as the prior) and the memory limit is
set to 0.25 GiB with ``DIFFRECON_MAX_VOLUME_GB``, so the size cases are refused without coming near the
machine's memory even if a check were missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from diffrecon.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT_GB = "0.25"
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


@pytest.fixture(autouse=True)
def _small_memory_limit(monkeypatch):
    monkeypatch.setenv("DIFFRECON_MAX_VOLUME_GB", LIMIT_GB)


def _nii(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _truncated(src, dst, keep=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def _npy_header_only(path, name, shape, dtype):
    """A .npz whose array ``name`` declares ``shape``/``dtype`` but holds no data (a few hundred bytes)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", buf.getvalue())
    return path


def _sinogram_variant(src, dst, geometry=None, metadata=None, sinogram=None):
    with np.load(src) as z:
        arrays = dict(z)
    g, m = json.loads(str(arrays["geometry"])), json.loads(str(arrays["metadata"]))
    g.update(geometry or {})
    m.update(metadata or {})
    np.savez(dst, sinogram=arrays["sinogram"] if sinogram is None else sinogram, geometry=json.dumps(g),
             metadata=json.dumps(m))
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Good and bad input files, built once; name → path."""
    import xarray as xr

    from diffrecon.io.hsi import make_cube, save_cube
    from diffrecon.io.kspace import save_kspace
    from diffrecon.priors import DiffusionPrior, VPSchedule, save_prior
    from diffrecon.priors.networks import build_network

    d = tmp_path_factory.mktemp("corpus")
    f: dict[str, str] = {}
    rng = np.random.default_rng(0)
    vol = (0.2 + 0.8 * rng.random((8, 8, 2))).astype(np.float32)

    # NIfTI volumes
    f["vol"] = _nii(d / "vol.nii.gz", vol)
    f["complex_nii"] = _nii(d / "complex.nii.gz", (vol + 1j * vol).astype(np.complex64))
    f["nan_nii"] = _nii(d / "nan.nii.gz", np.where(vol > 0.5, np.nan, vol).astype(np.float32))
    f["vol4d"] = _nii(d / "vol4d.nii.gz", np.stack([vol] * 3, -1))
    f["vol2d"] = _nii(d / "vol2d.nii.gz", vol[..., 0])
    f["zero_nii"] = _nii(d / "zero.nii.gz", np.zeros_like(vol))
    f["trunc_nii"] = _truncated(d / "vol.nii.gz", d / "trunc.nii.gz")
    f["trunc_nii_raw"] = _truncated(_nii(d / "raw.nii", vol), d / "trunc.nii", keep=0.9)
    f["random_nii"] = d / "random.nii.gz"
    f["random_nii"].write_bytes(rng.bytes(512))
    huge = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), AFFINE)
    huge.header.set_data_shape((20000, 20000, 100))  # 160 GB declared, a 352-byte header on disk
    (d / "huge.nii").write_bytes(huge.header.binaryblock + b"\0" * 4)
    f["huge_nii"] = d / "huge.nii"
    f["text"] = d / "notes.txt"
    f["text"].write_text("not a volume\n")

    # CT sinograms (slices along axis 2: two 8 x 8 slices, 4 views)
    assert main(["simulate", str(f["vol"]), str(d / "sino.npz"), "--views", "4"]) == 0
    sino = d / "sino.npz"
    f["sino"] = sino
    f["sino_det_abc"] = _sinogram_variant(sino, d / "det_abc.npz", geometry={"n_detectors": "abc"})
    f["sino_axis_x"] = _sinogram_variant(sino, d / "axis_x.npz", metadata={"slice_axis": "x"})
    f["sino_vshape"] = _sinogram_variant(sino, d / "vshape.npz", metadata={"volume_shape": [9, 9, 2]})
    f["sino_60000"] = _sinogram_variant(sino, d / "huge_geom.npz", geometry={"image_shape": [60000, 60000]},
                                        metadata={"volume_shape": [60000, 60000, 2]})
    with np.load(sino) as z:
        s = z["sinogram"]
    f["sino_nan"] = _sinogram_variant(sino, d / "nan_sino.npz", sinogram=np.full_like(s, np.nan))
    f["sino_int"] = _sinogram_variant(sino, d / "int_sino.npz", sinogram=s.astype(np.int32))
    f["sino_empty"] = _sinogram_variant(sino, d / "empty.npz", sinogram=s[:0],
                                        metadata={"volume_shape": [8, 8, 0]})
    np.savez(d / "nogeom.npz", sinogram=s)
    f["sino_nogeom"] = d / "nogeom.npz"
    f["sino_huge_header"] = _npy_header_only(d / "huge_header.npz", "sinogram", (2, 4, 10**9), np.float32)
    with zipfile.ZipFile(f["sino_huge_header"], "a") as z:
        g = json.loads(str(np.load(sino)["geometry"]))
        g["n_detectors"] = 10**9
        z.writestr("geometry.npy", _npy_bytes(np.array(json.dumps(g))))
    f["trunc_npz"] = _truncated(sino, d / "trunc.npz")
    f["random_npz"] = d / "random.npz"
    f["random_npz"].write_bytes(rng.bytes(700))

    # MRI k-space
    assert main(["simulate", str(f["vol"]), str(d / "k.npz"), "--modality", "mri", "--coils", "2"]) == 0
    f["kspace"] = d / "k.npz"
    from diffrecon.io.kspace import load_kspace

    k = load_kspace(f["kspace"])
    save_kspace(d / "k.h5", k.kspace, mask=k.mask, maps=k.maps, target=k.target, affine=k.affine)
    f["kspace_h5"] = d / "k.h5"
    import h5py

    with h5py.File(d / "group.h5", "w") as h:
        h.create_group("kspace").create_dataset("real", data=np.zeros((2, 8, 8)))
    f["kspace_group"] = d / "group.h5"
    with h5py.File(d / "nokspace.h5", "w") as h:
        h.create_dataset("image", data=np.zeros((2, 8, 8)))
    f["kspace_missing_h5"] = d / "nokspace.h5"
    np.savez(d / "real_k.npz", kspace=np.abs(k.kspace.numpy()))
    f["kspace_real"] = d / "real_k.npz"
    np.savez(d / "rank5.npz", kspace=k.kspace.numpy()[None])
    f["kspace_rank5"] = d / "rank5.npz"
    nan_k = k.kspace.numpy().copy()
    nan_k[0, 0, 0, 0] = np.nan
    np.savez(d / "nan_k.npz", kspace=nan_k)
    f["kspace_nan"] = d / "nan_k.npz"
    np.savez(d / "badmask.npz", kspace=k.kspace.numpy(), mask=np.ones(5))
    f["kspace_badmask"] = d / "badmask.npz"
    f["kspace_huge"] = _npy_header_only(d / "huge_k.npz", "kspace", (200, 100, 1000, 1000), np.complex64)
    f["trunc_h5"] = _truncated(d / "k.h5", d / "trunc.h5")
    f["random_h5"] = d / "random.h5"
    f["random_h5"].write_bytes(rng.bytes(900))
    f["kspace_nomaps"] = d / "nomaps.npz"
    save_kspace(f["kspace_nomaps"], k.kspace, mask=k.mask)

    # hyperspectral cubes (y, x, band) = 8 x 8 x 4
    cube = rng.random((8, 8, 4)).astype(np.float32)
    save_cube(d / "cube.nc", make_cube(cube, wavelengths=[450, 550, 650, 750]),
              extra={"flat": xr.DataArray(np.zeros((8, 8), np.float32), dims=("y", "x"))})
    f["cube"] = d / "cube.nc"
    save_cube(d / "cube1000.nc", make_cube(cube * 1000))
    f["cube_1000"] = d / "cube1000.nc"
    nan_cube = cube.copy()
    nan_cube[0, 0, 0] = np.nan
    save_cube(d / "nan_cube.nc", make_cube(nan_cube))
    f["cube_nan"] = d / "nan_cube.nc"
    xr.Dataset({"data": (("a", "b", "c"), cube)}).to_netcdf(d / "dims.nc")
    f["cube_dims"] = d / "dims.nc"
    import netCDF4

    with netCDF4.Dataset(d / "huge.nc", "w") as ds:  # 8 KB on disk, 20000 x 20000 x 100 declared
        for name, n in (("y", 20000), ("x", 20000), ("band", 100)):
            ds.createDimension(name, n)
        ds.createVariable("cube", "f4", ("y", "x", "band"), chunksizes=(100, 100, 10))
    f["cube_huge"] = d / "huge.nc"
    assert os.path.getsize(f["cube_huge"]) < 64 * 1024
    f["trunc_nc"] = _truncated(d / "cube.nc", d / "trunc.nc")
    xr.Dataset({"cube": (("y", "x", "band"), cube)}).to_netcdf(d / "cube3.nc", engine="scipy")  # NetCDF-3
    f["trunc_nc3"] = _truncated(d / "cube3.nc", d / "trunc3.nc")  # read as zeros by the netCDF library
    f["random_nc"] = d / "random.nc"
    f["random_nc"].write_bytes(rng.bytes(600))
    np.save(d / "mask_wrong.npy", np.ones((3, 3, 4), bool))
    f["mask_wrong"] = d / "mask_wrong.npy"
    f["cube_xyz"] = d / "cube.xyz"
    f["cube_xyz"].write_bytes(b"\0" * 64)

    # priors: a random-weight denoiser of 8 x 8 slices (those of the corpus volumes), one with NaN weights
    arch = {"type": "diffrecon.TinyDenoiser", "kwargs": {"width": 8, "depth": 2}}
    torch.manual_seed(0)
    prior = DiffusionPrior(build_network(arch), VPSchedule.linear(1000, 1e-4, 0.02), "eps", "index",
                           image_shape=(1, 8, 8), config={"architecture": arch, "data_description": "corpus"})
    save_prior(prior, d / "prior8")
    f["prior8"] = d / "prior8"
    torch.save({"state_dict": prior.network.state_dict()}, d / "tiny.pth")  # weights only, no JSON beside
    f["tiny_pth"] = d / "tiny.pth"
    wide = {**json.loads((d / "prior8.json").read_text()), "architecture": {**arch, "kwargs": {"width": 12}}}
    (d / "wide.json").write_text(json.dumps(wide))
    f["wide_arch"] = d / "wide.json"
    with torch.no_grad():
        for p in prior.network.parameters():
            p.fill_(float("nan"))
    save_prior(prior, d / "nan_prior8")
    f["nan_prior8"] = d / "nan_prior8"
    # a DDS state of a 2-step run on `sino`, and the same state with a tampered step
    f["state"] = d / "dds.state.pt"
    assert main(["reconstruct", str(sino), str(d / "dds.nii.gz"), "--method", "dds", "--steps", "2",
                 "--prior", str(f["prior8"]), "--quiet", "--save-state", str(f["state"])]) == 0
    blob = torch.load(f["state"], map_location="cpu", weights_only=True)
    blob["step"] = 10**6
    torch.save(blob, d / "tampered.state.pt")
    f["state_tampered"] = d / "tampered.state.pt"
    f["sino_flipped"] = _sinogram_variant(sino, d / "flipped.npz", sinogram=s[::-1].copy())
    f["junk_state"] = d / "junk.pt"
    f["junk_state"].write_bytes(b"not a torch file")

    # training data: a folder with one NIfTI volume, a run folder holding a run, an exported prior
    (d / "train").mkdir()
    shutil.copy(f["vol"], d / "train" / "vol.nii.gz")
    f["train_dir"] = d / "train"
    (d / "empty_dir").mkdir()
    f["empty_dir"] = d / "empty_dir"
    (d / "run").mkdir()
    (d / "run" / "state.json").write_text("{}")
    f["run_dir"] = d / "run"
    f["export_stem"] = d / "prior8"  # prior8.json/.safetensors exist

    # a demo output folder that holds a previous run
    (d / "demo_done").mkdir()
    (d / "demo_done" / "metrics.json").write_text("{}")
    f["demo_done"] = d / "demo_done"
    return {k: str(v) for k, v in f.items()}


def _npy_bytes(arr):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# the corpus: (id, argv, exit status, a fragment the one-line message must contain)
# {name} is a corpus file; {out:NAME} a fresh output path; {existing:NAME} an output that exists (it must
# be left unchanged); {pre:NAME} the same, but not passed on the command line (a JSON record or PNG that
# goes with the output); {dir} an existing directory; {ro:NAME} a path in a read-only folder.
S, R, H, T, D, I = "simulate", "reconstruct", "hsi restore", "train-prior", "demo", "info"
C = "convert-prior"
SIM = ["simulate", "{vol}", "{out:o.npz}"]
MRI = [*SIM, "--modality", "mri"]
FBP = ["reconstruct", "{sino}", "{out:o.nii.gz}", "--method", "fbp"]
TV = ["reconstruct", "{sino}", "{out:o.nii.gz}", "--method", "admm_tv", "--quiet"]
DDS = ["reconstruct", "{sino}", "{out:o.nii.gz}", "--method", "dds", "--steps", "2", "--quiet",
       "--prior", "{prior8}"]
KSP = ["reconstruct", "{kspace}", "{out:o.nii.gz}", "--method"]
HSI = ["hsi", "restore", "{cube}", "{out:o.nc}", "--task", "denoise", "--method", "tv", "--no-png"]
TRAIN = ["train-prior", "--data", "{train_dir}", "--out", "{out:run}", "--image-size", "8", "--channels",
         "8", "8", "--norm-groups", "4", "--head-channels", "8", "--steps", "1", "--batch-size", "2",
         "--no-progress"]
DEMO = ["demo", "--out", "{out:demo}", "--volume", "phantom", "--size", "8", "--quiet"]
BAD_DEVICES = ["bogus", "gpu", "mps", "meta", "cuda:99"]
DEVICE_MESSAGE = {"bogus": "expected cpu, cuda", "gpu": "expected cpu, cuda", "mps": "runs on cpu or cuda",
                  "meta": "runs on cpu or cuda", "cuda:99": "--device cuda"}


def _with(argv, option, value):
    """``argv`` with the value after ``option`` replaced."""
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def _cases():
    c = []

    def add(cid, argv, rc, message):
        c.append(pytest.param(argv, rc, message, id=cid))

    # --- simulate (CT and MRI) ---
    add("simulate-r10-missing-input", [S, "{out:nope.nii.gz}", "{out:o.npz}"], 1, "no such file")
    add("simulate-r10-random-bytes", [S, "{random_nii}", "{out:o.npz}"], 1, "not a readable NIfTI")
    add("simulate-r10-truncated-nii", [S, "{trunc_nii}", "{out:o.npz}"], 1, "not a readable NIfTI")
    add("simulate-r10-truncated-raw-nii", [S, "{trunc_nii_raw}", "{out:o.npz}"], 1, "not a readable NIfTI")
    add("simulate-r10-text-file", [S, "{text}", "{out:o.npz}"], 1, "not a readable NIfTI")
    add("simulate-r9-complex-nifti", [S, "{complex_nii}", "{out:o.npz}"], 1, "magnitude")
    add("simulate-mri-r9-complex-nifti", [S, "{complex_nii}", "{out:o.npz}", "--modality", "mri"], 1,
        "real part")
    add("simulate-r9-nan-volume", [S, "{nan_nii}", "{out:o.npz}"], 1, "NaN/Inf")
    add("simulate-r9-4d-volume", [S, "{vol4d}", "{out:o.npz}"], 1, "3-D volume")
    add("simulate-r9-2d-volume", [S, "{vol2d}", "{out:o.npz}"], 1, "3-D volume")
    add("simulate-r8-huge-nifti-header", [S, "{huge_nii}", "{out:o.npz}"], 1, "would need")
    add("simulate-r8-views-1e9", [*SIM, "--views", "1000000000"], 1, "would need")
    add("simulate-r8-views-1e9-literal", [*SIM, "--views", "1e9"], 2, "invalid int value")
    add("simulate-r8-detectors-1e9", [*SIM, "--detectors", "1000000000"], 1, "would need")
    add("simulate-r8-fan-views-1e9", [*SIM, "--geometry", "fan", "--views", "1000000000"], 1, "would need")
    add("simulate-r8-limited-angle-1e9", [*SIM, "--limited-angle", "1e9"], 1, "would need")
    add("simulate-mri-r8-coils-1e5", [*MRI, "--coils", "100000"], 1, "would need")
    add("simulate-r9-views-0", [*SIM, "--views", "0"], 1, "positive")
    add("simulate-r9-views-negative", [*SIM, "--views", "-3"], 1, "positive")
    add("simulate-r9-views-nan", [*SIM, "--views", "nan"], 2, "invalid int value")
    add("simulate-r9-detectors-0", [*SIM, "--detectors", "0"], 1, "n_detectors >= 1")
    add("simulate-r9-arc-0", [*SIM, "--arc", "0"], 1, "arc_degrees in (0, 360]")
    add("simulate-r9-arc-nan", [*SIM, "--arc", "nan"], 1, "arc_degrees in (0, 360]")
    add("simulate-r9-noise-negative", [*SIM, "--noise", "-0.1"], 1, "noise >= 0")
    add("simulate-r9-noise-nan", [*SIM, "--noise", "nan"], 1, "noise >= 0")
    add("simulate-r9-limited-angle-0", [*SIM, "--limited-angle", "0"], 1, "wedge_degrees")
    add("simulate-r9-slice-axis-7", [*SIM, "--slice-axis", "7"], 1, "--slice-axis")
    add("simulate-r9-bad-geometry-choice", [*SIM, "--geometry", "cone"], 2, "invalid choice")
    add("simulate-mri-r9-coils-0", [*MRI, "--coils", "0"], 1, "n_coils >= 1")
    add("simulate-mri-r9-acceleration-0", [*MRI, "--acceleration", "0"], 1, "acceleration")
    add("simulate-mri-r9-acceleration-nan", [*MRI, "--acceleration", "nan"], 1, "acceleration")
    add("simulate-mri-r9-snr-nan", [*MRI, "--snr-db", "nan"], 1, "snr_db")
    add("simulate-mri-r9-center-fraction-2", [*MRI, "--center-fraction", "2"], 1, "center")
    add("simulate-mri-r9-calib-negative", [*MRI, "--mask", "poisson2d", "--calib", "-1"], 1,
        "calibration box")
    add("simulate-mri-r9-slices-reversed", [*MRI, "--slices", "2:1"], 1, "--slices")
    add("simulate-mri-r9-zero-volume", [S, "{zero_nii}", "{out:o.npz}", "--modality", "mri"], 1,
        "zero everywhere")
    add("simulate-r10-output-is-directory", [S, "{vol}", "{dir}"], 1, "is a directory")
    add("simulate-r10-output-is-directory-overwrite", [S, "{vol}", "{dir}", "--overwrite"], 1,
        "is a directory")
    add("simulate-r1-existing-output", [S, "{vol}", "{existing:o.npz}"], 1, "already exists")
    add("simulate-r1-existing-record", [S, "{vol}", "{out:o.npz}", "{pre:o.json}"], 1,
        "o.json already exists")
    add("simulate-mri-r1-existing-output", [S, "{vol}", "{existing:k.npz}", "--modality", "mri"], 1,
        "already exists")
    add("simulate-r10-read-only-folder", [S, "{vol}", "{ro:o.npz}"], 1, "not writable")
    add("simulate-r10-output-under-a-file", [S, "{vol}", "{existing:f.txt}/o.npz"], 1, "a file stands")
    add("simulate-r10-unknown-option", [*SIM, "--bogus"], 2, "unrecognized arguments")
    add("simulate-r10-missing-argument", [S, "{vol}"], 2, "required")

    # --- reconstruct: CT ---
    add("reconstruct-r10-missing-input", [R, "{out:nope.npz}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "no such file")
    add("reconstruct-r10-random-npz", [R, "{random_npz}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "not a readable")
    add("reconstruct-r10-truncated-npz", [R, "{trunc_npz}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "not a readable")
    add("reconstruct-r10-wrong-extension", [R, "{cube}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "expected a sinogram .npz (CT) or a k-space")
    add("reconstruct-r10-output-npz", [R, "{sino}", "{out:o.npz}", "--method", "fbp"], 1,
        "name the output .nii or .nii.gz")
    add("reconstruct-r10-geometry-detectors-abc", [R, "{sino_det_abc}", "{out:o.nii.gz}", "--method", "fbp"],
        1, "bad or missing fields")
    add("reconstruct-r10-metadata-slice-axis-x", [R, "{sino_axis_x}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "slice_axis must be an integer")
    add("reconstruct-r9-volume-shape-mismatch", [R, "{sino_vshape}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "does not match the data")
    add("reconstruct-r8-geometry-60000", [R, "{sino_60000}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "would need")
    add("reconstruct-r8-sinogram-header-1e9-bins", [R, "{sino_huge_header}", "{out:o.nii.gz}", "--method",
                                                     "fbp"], 1, "would need")
    add("reconstruct-r9-nan-sinogram", [R, "{sino_nan}", "{out:o.nii.gz}", "--method", "fbp"], 1, "NaN/Inf")
    add("reconstruct-r9-integer-sinogram", [R, "{sino_int}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "floating-point")
    add("reconstruct-r9-zero-slice-sinogram", [R, "{sino_empty}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "no data")
    add("reconstruct-r10-no-geometry", [R, "{sino_nogeom}", "{out:o.nii.gz}", "--method", "fbp"], 1,
        "missing ['geometry']")
    add("reconstruct-r10-mri-method-on-ct", [R, "{sino}", "{out:o.nii.gz}", "--method", "sense"], 1,
        "holds a CT sinogram")
    add("reconstruct-r10-unknown-method", [R, "{sino}", "{out:o.nii.gz}", "--method", "magic"], 2,
        "invalid choice")
    add("reconstruct-r10-bad-filter", [*FBP, "--filter", "bogus"], 1, "filter")
    add("reconstruct-r9-iters-0", [*TV, "--iters", "0"], 1, "n_iter >= 1")
    add("reconstruct-r9-iters-negative", [*TV, "--iters", "-5"], 1, "n_iter >= 1")
    add("reconstruct-r9-cg-iters-0", [*TV, "--cg-iters", "0"], 1, "cg_iter >= 1")
    add("reconstruct-r9-lam-nan", [*TV, "--lam", "nan"], 1, "lam")
    add("reconstruct-r9-lam-negative", [*TV, "--lam", "-1"], 1, "lam")
    add("reconstruct-r9-rho-0", [*TV, "--rho", "0"], 1, "rho")
    add("reconstruct-r9-tv-axes", [*TV, "--tv-axes", "diagonal"], 1, "--tv-axes")
    add("reconstruct-r1-existing-output", [R, "{sino}", "{existing:o.nii.gz}", "--method", "fbp"], 1,
        "already exists")
    add("reconstruct-r10-output-is-directory", [R, "{sino}", "{dir}", "--method", "fbp"], 1,
        "name the output .nii")
    add("reconstruct-r10-output-directory-named-nii", [R, "{sino}", "{dir:d.nii.gz}", "--method", "fbp",
                                                        "--overwrite"], 1, "is a directory")
    add("reconstruct-r10-read-only-folder", [R, "{sino}", "{ro:o.nii.gz}", "--method", "fbp"], 1,
        "not writable")
    for dev in BAD_DEVICES:
        add(f"reconstruct-r10-device-{dev}", [*FBP, "--device", dev], 1, DEVICE_MESSAGE[dev])
    # --- reconstruct: the PNG montage (OUTPUT.png by default, --png PATH, --no-png) ---
    add("reconstruct-r1-existing-default-png", [*FBP, "{pre:o.png}"], 1, "o.png already exists")
    add("reconstruct-r1-existing-png-option", [*FBP, "--png", "{existing:m.png}"], 1, "m.png already exists")
    add("reconstruct-r10-png-read-only-folder", [*FBP, "--png", "{ro:m.png}"], 1, "not writable")
    add("reconstruct-r10-png-new-folder-in-read-only-folder", [*FBP, "--png", "{ro:new/m.png}"], 1,
        "not writable")
    add("reconstruct-r10-png-folder-is-a-file", [*FBP, "--png", "{existing:f.txt}/m.png"], 1, "a file stands")
    add("reconstruct-r10-png-is-directory", [*FBP, "--png", "{dir:m.png}", "--overwrite"], 1,
        "is a directory")
    add("reconstruct-r10-png-not-png", [*FBP, "--png", "{out:m.jpg}"], 1, "name it .png")
    add("reconstruct-r10-png-and-no-png", [*FBP, "--png", "{out:m.png}", "--no-png"], 2, "not allowed with")
    add("reconstruct-dds-r4-png-is-save-state", [*DDS, "--save-state", "{out:s.png}", "--png", "{out:s.png}"],
        1, "that is the output, its record or the --save-state file")
    add("reconstruct-dds-r6-nan-prior-no-png", [*_with(DDS, "--prior", "{nan_prior8}"), "--png",
                                                "{out:m.png}"], 1, "non-finite")
    # --- reconstruct: diffusion ---
    add("reconstruct-dds-r4-save-state-is-output", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds",
                                                    "--prior", "{prior8}", "--save-state", "{out:o.nii.gz}"],
        1, "that is the output")
    add("reconstruct-dds-r4-save-state-is-record", [*DDS, "--save-state", "{out:o.json}"], 1,
        "that is the output")
    add("reconstruct-dds-r4-save-state-exists", [*DDS, "--save-state", "{existing:s.pt}"], 1,
        "already exists")
    add("reconstruct-dds-r5-resume-other-settings", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds",
                                                     "--steps", "3", "--quiet", "--prior", "{prior8}",
                                                     "--resume", "{state}"], 1, "another run")
    add("reconstruct-dds-r5-resume-other-data", [R, "{sino_flipped}", "{out:o.nii.gz}", "--method", "dds",
                                                 "--steps", "2", "--quiet", "--prior", "{prior8}",
                                                 "--resume", "{state}"], 1, "different measurements")
    add("reconstruct-dds-r5-resume-tampered-step", [*DDS, "--resume", "{state_tampered}"], 1,
        "not resumable")
    add("reconstruct-dds-r10-resume-junk", [*DDS, "--resume", "{junk_state}"], 1,
        "cannot read the solver state")
    add("reconstruct-dds-r10-resume-missing", [*DDS, "--resume", "{out:none.pt}"], 1, "none.pt")
    add("reconstruct-dds-r6-nan-prior", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds", "--steps", "2",
                                         "--quiet", "--prior", "{nan_prior8}"], 1, "non-finite")
    add("reconstruct-dds-r10-prior-size", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds", "--quiet",
                                           "--resample", "off"], 1, "trained on 64x64")
    add("reconstruct-dds-r9-resample-bogus", [*DDS, "--resample", "bogus"], 2, "invalid choice")
    add("reconstruct-dds-r9-resample-empty", [*DDS, "--resample", ""], 2, "invalid choice")
    add("reconstruct-dds-r9-resample-uppercase", [*DDS, "--resample", "AUTO"], 2, "invalid choice")
    add("reconstruct-mri-r9-resample-bogus", [*KSP, "dds", "--quiet", "--resample", "on"], 2,
        "invalid choice")
    add("reconstruct-dds-r10-prior-missing", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds",
                                              "--prior", "no-such-prior"], 1, "no-such-prior")
    add("reconstruct-dds-r10-prior-pth-without-architecture", [*_with(DDS, "--prior", "{tiny_pth}")], 1,
        "--architecture")
    add("reconstruct-dds-r10-prior-not-diffusers", [*_with(DDS, "--prior", "{empty_dir}")], 1,
        "no diffusers folder")
    add("reconstruct-dds-r10-prior-random-file", [R, "{sino}", "{out:o.nii.gz}", "--method", "dds",
                                                  "--prior", "{random_npz}"], 1, "random")
    add("reconstruct-dds-r9-steps-0", _with(DDS, "--steps", "0"), 1, "--steps")
    add("reconstruct-dds-r9-steps-negative", _with(DDS, "--steps", "-4"), 1, "--steps")
    add("reconstruct-dds-r9-image-scale-nan", [*DDS, "--image-scale", "nan"], 1, "image-scale")
    add("reconstruct-dds-r9-image-scale-0", [*DDS, "--image-scale", "0"], 1, "image-scale")
    add("reconstruct-dds-r9-chunk-size-0", [*DDS, "--chunk-size", "0"], 1, "chunk")
    add("reconstruct-dds-r9-save-every-0", [*DDS, "--save-state", "{out:s.pt}", "--save-every", "0"], 1,
        "save-every")
    add("reconstruct-dds-r9-iters", [*DDS, "--iters", "5"], 1, "--steps")
    add("reconstruct-dds-r9-lam-nan", [*DDS, "--lam", "nan"], 1, "lam")
    add("reconstruct-mbir-r9-steps-0", [R, "{sino}", "{out:o.nii.gz}", "--method", "mbir", "--steps", "0",
                                        "--quiet", "--prior", "{prior8}"], 1, "--steps")
    # --- reconstruct: MRI k-space ---
    add("reconstruct-mri-r10-kspace-group", [R, "{kspace_group}", "{out:o.nii.gz}", "--method", "zerofill"],
        1, "not a dataset")
    add("reconstruct-mri-r10-no-kspace", [R, "{kspace_missing_h5}", "{out:o.nii.gz}", "--method", "zerofill"],
        1, "expected a 'kspace' dataset")
    add("reconstruct-mri-r10-truncated-h5", [R, "{trunc_h5}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "not a readable HDF5")
    add("reconstruct-mri-r10-random-h5", [R, "{random_h5}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "not a readable HDF5")
    add("reconstruct-mri-r9-real-kspace", [R, "{kspace_real}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "expected complex k-space")
    add("reconstruct-mri-r9-rank5-kspace", [R, "{kspace_rank5}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "rank 4")
    add("reconstruct-mri-r9-nan-kspace", [R, "{kspace_nan}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "NaN/Inf")
    add("reconstruct-mri-r9-mask-shape", [R, "{kspace_badmask}", "{out:o.nii.gz}", "--method", "zerofill"], 1,
        "mask shape")
    add("reconstruct-mri-r8-kspace-header-800gb", [R, "{kspace_huge}", "{out:o.nii.gz}", "--method",
                                                   "zerofill"], 1, "would need")
    add("reconstruct-mri-r10-ct-method-on-kspace", [*KSP, "fbp"], 1, "holds MRI k-space")
    add("reconstruct-mri-r10-stored-maps-missing", [R, "{kspace_nomaps}", "{out:o.nii.gz}", "--method",
                                                    "sense", "--maps", "stored"], 1, "stores no coil maps")
    add("reconstruct-mri-r9-sense-iters-0", [*KSP, "sense", "--iters", "0", "--quiet"], 1, "n_iter")
    add("reconstruct-mri-r9-tv-iters-0", [*KSP, "admm_tv", "--iters", "0", "--quiet"], 1, "n_iter")
    add("reconstruct-mri-r9-tv-lam-nan", [*KSP, "admm_tv", "--lam", "nan", "--quiet"], 1, "lam")
    add("reconstruct-mri-r9-sense-lam-negative", [*KSP, "sense", "--lam", "-1", "--quiet"], 1, "lam")
    add("reconstruct-mri-r9-calib-width-0", [R, "{kspace_nomaps}", "{out:o.nii.gz}", "--method", "sense",
                                             "--calib-width", "0", "--quiet"], 1, "calib")
    add("reconstruct-mri-r9-tv-axes", [*KSP, "admm_tv", "--tv-axes", "x", "--quiet"], 1, "--tv-axes")
    add("reconstruct-mri-r1-existing-output", [R, "{kspace_h5}", "{existing:o.nii.gz}", "--method",
                                               "zerofill"], 1, "already exists")
    add("reconstruct-mri-r10-device-meta", [*KSP, "zerofill", "--device", "meta"], 1, "runs on cpu or cuda")

    # --- hsi restore ---
    add("hsi-r10-missing-input", [*HSI[:2], "{out:nope.nc}", *HSI[3:]], 1, "no such file")
    add("hsi-r10-random-nc", [*HSI[:2], "{random_nc}", *HSI[3:]], 1, "not a readable NetCDF")
    add("hsi-r10-truncated-nc", [*HSI[:2], "{trunc_nc}", *HSI[3:]], 1, "not a readable NetCDF")
    add("hsi-r10-truncated-netcdf3", [*HSI[:2], "{trunc_nc3}", *HSI[3:]], 1, "truncated or corrupt NetCDF-3")
    add("hsi-r10-unknown-extension", [*HSI[:2], "{cube_xyz}", *HSI[3:]], 1, "unknown hyperspectral format")
    add("hsi-r10-variable-2d", [*HSI, "--variable", "flat"], 1, "a cube needs 3")
    add("hsi-r10-variable-missing", [*HSI, "--variable", "nope"], 1, "no cube variable")
    add("hsi-r8-huge-netcdf", [*HSI[:2], "{cube_huge}", *HSI[3:]], 1, "would need")
    add("hsi-r2-values-0-1000", [*HSI[:2], "{cube_1000}", *HSI[3:]], 1, "--value-range auto")
    add("hsi-r3-dims-by-position", [*HSI[:2], "{cube_dims}", *HSI[3:]], 1, "matched by name")
    add("hsi-r9-nan-cube-denoise", [*HSI[:2], "{cube_nan}", *HSI[3:]], 1, "NaN")
    add("hsi-r9-sigma-0", [*HSI, "--sigma", "0"], 1, "> 0")
    add("hsi-r9-sigma-nan", [*HSI, "--sigma", "nan"], 1, "sigma")
    add("hsi-r9-sigma-negative", [*HSI, "--sigma", "-1"], 1, "sigma")
    add("hsi-r9-value-range-reversed", [*HSI, "--value-range", "1,0"], 1, "HI > LO")
    add("hsi-r9-value-range-nan", [*HSI, "--value-range", "nan,1"], 1, "value-range")
    add("hsi-r9-value-range-text", [*HSI, "--value-range", "bright"], 1, "expected unit, auto or LO,HI")
    add("hsi-r9-threads-0", [*HSI, "--threads", "0"], 1, "--threads")
    add("hsi-r9-factor-0", [*HSI[:5], "sr", "--method", "bicubic", "--no-png", "--factor", "0"], 1, "factor")
    add("hsi-r9-rank-0", [*HSI[:7], "dds2m", "--no-png", "--rank", "0"], 2, "must be >= 1")
    add("hsi-r9-steps-0", [*HSI[:7], "dds2m", "--no-png", "--steps", "0"], 1, "steps")
    add("hsi-r9-lr-nan", [*HSI[:7], "dds2m", "--no-png", "--lr", "nan"], 1, "lr")
    add("hsi-r9-ema-2", [*HSI[:7], "dds2m", "--no-png", "--ema", "2"], 1, "ema")
    add("hsi-r9-samples-0", [*HSI[:7], "dds2m", "--no-png", "--samples", "0"], 1, "samples")
    add("hsi-r9-updates-0", [*HSI[:7], "dds2m", "--no-png", "--updates-per-step", "0"], 1, "updates")
    add("hsi-r10-inpaint-without-mask", [*HSI[:5], "inpaint", "--method", "tv", "--no-png", "--sigma", "0.1"],
        1, "--mask")
    add("hsi-r10-mask-missing", [*HSI[:5], "inpaint", "--method", "tv", "--no-png", "--sigma", "0.1",
                                 "--mask", "{out:nomask.npy}"], 1, "no such file")
    add("hsi-r10-mask-wrong-shape", [*HSI[:5], "inpaint", "--method", "tv", "--no-png", "--sigma", "0.1",
                                     "--mask", "{mask_wrong}"], 1, "does not match the cube")
    add("hsi-r10-method-task-mismatch", [*HSI[:7], "bicubic", "--no-png"], 1, "--method bicubic is for")
    add("hsi-r10-tuned-inpaint", [*HSI[:5], "inpaint", "--tuned", "--no-png"], 1, "--tuned")
    add("hsi-r10-bad-task", [*HSI[:5], "paint", "--no-png"], 2, "invalid choice")
    add("hsi-r1-existing-output", [*HSI[:3], "{existing:o.nc}", *HSI[4:]], 1, "already exists")
    add("hsi-r1-existing-png", [*HSI[:3], "{out:p.nc}", *HSI[4:-1], "{pre:p.png}"], 1,
        "p.png already exists")
    add("hsi-r1-existing-record", [*HSI[:3], "{out:p.nc}", *HSI[4:], "{pre:p.json}"], 1,
        "p.json already exists")
    add("hsi-r10-output-is-directory", [*HSI[:3], "{dir}", *HSI[4:]], 1, "is a directory")
    add("hsi-r10-read-only-folder", [*HSI[:3], "{ro:o.nc}", *HSI[4:]], 1, "not writable")
    for dev in BAD_DEVICES:
        add(f"hsi-r10-device-{dev}", [*HSI, "--device", dev], 1, DEVICE_MESSAGE[dev])

    # --- train-prior ---
    add("train-prior-r10-no-data", [T, "--out", "{out:run}"], 1, "give --data")
    add("train-prior-r10-data-missing", [T, "--data", "{out:nothing}", "--out", "{out:run}"], 1, "nothing")
    add("train-prior-r10-data-empty-folder", [*TRAIN[:2], "{empty_dir}", *TRAIN[3:]], 1, "empty_dir")
    add("train-prior-r10-data-not-nifti", [*TRAIN[:2], "{text}", *TRAIN[3:]], 1, "notes.txt")
    add("train-prior-r9-data-complex", [*TRAIN[:2], "{complex_nii}", *TRAIN[3:]], 1, "magnitude")
    add("train-prior-r10-bank-missing", [T, "--bank", "{out:nobank}", "--out", "{out:run}"], 1, "nobank")
    add("train-prior-r1-existing-run", [T, "--data", "{train_dir}", "--out", "{run_dir}"], 1,
        "holds a training run")
    add("train-prior-r1-existing-export", [*TRAIN, "--export", "{export_stem}"], 1, "already exists")
    add("train-prior-r10-out-is-a-file", _with(TRAIN, "--out", "{existing:f.txt}"), 1, "f.txt")
    add("train-prior-r10-read-only-folder", _with(TRAIN, "--out", "{ro:run}"), 1, "not writable")
    add("train-prior-r9-steps-0", _with(TRAIN, "--steps", "0"), 1, "--steps")
    add("train-prior-r9-batch-size-0", _with(TRAIN, "--batch-size", "0"), 1, "--batch-size")
    add("train-prior-r9-image-size-0", _with(TRAIN, "--image-size", "0"), 1, "--image-size")
    add("train-prior-r9-lr-nan", [*TRAIN, "--lr", "nan"], 1, "--lr")
    add("train-prior-r9-lr-negative", [*TRAIN, "--lr", "-1"], 1, "--lr")
    add("train-prior-r9-timesteps-0", [*TRAIN, "--timesteps", "0"], 1, "--timesteps")
    add("train-prior-r9-ema-decay-2", [*TRAIN, "--ema-decay", "2"], 1, "--ema-decay")
    add("train-prior-r9-val-slices-negative", [*TRAIN, "--val-slices", "-1"], 1, "--val-slices")
    add("train-prior-r9-threads-negative", [*TRAIN, "--threads", "-2"], 1, "--threads")
    add("train-prior-r9-time-limit-nan", [*TRAIN, "--time-limit", "nan"], 1, "--time-limit")
    add("train-prior-r9-percentiles-reversed", [*TRAIN, "--percentiles", "99", "1"], 1, "--percentiles")
    add("train-prior-r9-axes-5", [*TRAIN, "--axes", "5"], 1, "--axes")
    add("train-prior-r10-mixed-precision-cpu", [*TRAIN, "--mixed-precision", "--device", "cpu"], 1,
        "--mixed-precision")
    for dev in BAD_DEVICES:
        add(f"train-prior-r10-device-{dev}", [*TRAIN, "--device", dev], 1, DEVICE_MESSAGE[dev])

    # --- convert-prior ---
    add("convert-prior-r10-input-missing", [C, "{out:nothing}", "{out:conv}"], 1, "prior not found")
    add("convert-prior-r10-pth-missing", [C, "{out:nothing.pth}", "{out:conv}"], 1,
        "no PyTorch weights file")
    add("convert-prior-r10-pth-without-architecture", [C, "{tiny_pth}", "{out:conv}"], 1, "--architecture")
    add("convert-prior-r10-architecture-missing", [C, "{tiny_pth}", "{out:conv}", "--architecture",
                                                   "{out:nope.json}"], 1, "no architecture JSON")
    add("convert-prior-r10-architecture-not-json", [C, "{tiny_pth}", "{out:conv}", "--architecture",
                                                    "{text}"], 1, "not valid JSON")
    add("convert-prior-r10-architecture-wrong", [C, "{tiny_pth}", "{out:conv}", "--architecture",
                                                 "{wide_arch}"], 1, "shape mismatches")
    add("convert-prior-r10-pth-corrupt", [C, "{junk_state}", "{out:conv}", "--architecture",
                                          "{prior8}.json"], 1, "weights_only=True")
    add("convert-prior-r10-not-a-diffusers-folder", [C, "{empty_dir}", "{out:conv}"], 1, "missing")
    add("convert-prior-r1-existing-output", [C, "{prior8}", "{out:conv}", "{pre:conv.json}"], 1,
        "conv.json already exists")
    add("convert-prior-r10-output-is-directory", [C, "{prior8}", "{dir}"], 1, "is a directory")
    add("convert-prior-r10-read-only-folder", [C, "{prior8}", "{ro:conv}"], 1, "not writable")

    # --- demo ---
    add("demo-r1-existing-outputs", [D, "--out", "{demo_done}", "--volume", "phantom", "--size", "8",
                                     "--quiet"], 1, "already")
    add("demo-r10-out-is-a-file", [D, "--out", "{existing:f.txt}", "--volume", "phantom", "--size", "8",
                                   "--quiet"], 1, "f.txt")
    add("demo-r10-read-only-folder", [D, "--out", "{ro:demo}", "--volume", "phantom", "--size", "8",
                                      "--quiet"], 1, "not writable")
    add("demo-r9-views-0", [*DEMO, "--views", "0"], 1, "views")
    add("demo-r8-views-1e9", [*DEMO, "--views", "1000000000"], 1, "would need")
    add("demo-r9-size-0", _with(DEMO, "--size", "0"), 1, "--size")
    add("demo-r8-size-1e5", _with(DEMO, "--size", "100000"), 1, "would need")
    add("demo-r9-noise-nan", [*DEMO, "--noise", "nan"], 1, "noise")
    add("demo-r9-noise-negative", [*DEMO, "--noise", "-1"], 1, "noise")
    add("demo-r9-dds-steps-0", [D, "--out", "{out:demo}", "--methods", "dds", "--dds-steps", "0", "--quiet"],
        1, "steps")
    add("demo-r10-prior-missing", [D, "--out", "{out:demo}", "--methods", "dds", "--prior", "no-such-prior",
                                   "--quiet"], 1, "no-such-prior")
    add("demo-r10-prior-size", [*DEMO, "--methods", "dds"], 1, "64×64")
    add("demo-r10-bad-method", [*DEMO, "--methods", "magic"], 2, "invalid choice")
    for dev in BAD_DEVICES:
        add(f"demo-r10-device-{dev}", [*DEMO, "--device", dev], 1, DEVICE_MESSAGE[dev])

    # --- info, and the top level ---
    add("info-r10-unknown-option", [I, "--bogus"], 2, "unrecognized arguments")
    add("info-r10-extra-argument", [I, "extra"], 2, "unrecognized arguments")
    add("top-r10-unknown-command", ["rebuild"], 2, "invalid choice")
    return c


def _expand(argv, corpus, tmp_path):
    """Replace the placeholders; returns the argv, the existing outputs (with their bytes) and the
    directory the command must leave as it found it."""
    out_dir = tmp_path / "work"
    out_dir.mkdir(exist_ok=True)
    existing: dict = {}
    expanded = []
    for a in argv:
        while "{" in a:
            start, end = a.index("{"), a.index("}")
            key = a[start + 1:end]
            kind, _, name = key.partition(":")
            if kind == "out":
                value = str(out_dir / name)
            elif kind in ("existing", "pre"):
                p = out_dir / name
                p.write_bytes(b"an earlier result\n")
                existing[p] = p.read_bytes()
                value = str(p)
            elif kind == "dir":
                p = out_dir / (name or "a_folder")
                p.mkdir(exist_ok=True)
                value = str(p)
            elif kind == "ro":
                if os.geteuid() == 0:
                    pytest.skip("root ignores folder permissions, so a read-only folder cannot be made "
                                "(test_cli.py refuses the write with a patched mkstemp instead)")
                ro = tmp_path / "read_only"
                ro.mkdir(exist_ok=True)
                ro.chmod(0o555)
                value = str(ro / name)
            else:
                value = corpus[kind]
            a = a[:start] + value + a[end + 1:]
            if kind == "pre":
                a = None
                break
        if a is not None:
            expanded.append(a)
    return expanded, existing, out_dir


def _run(argv, capsys):
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("argv, rc, message", _cases())
def test_bad_input_is_one_line_error(argv, rc, message, corpus, tmp_path, capsys):
    argv, existing, out_dir = _expand(argv, corpus, tmp_path)
    before = sorted(p.name for p in out_dir.iterdir())
    got, out, err = _run(argv, capsys)
    command = "hsi restore" if argv[:2] == ["hsi", "restore"] else argv[0]
    prefix = f"diffrecon {command}: error: " if command in (S, R, H, T, D, I, C) else "diffrecon: error: "
    assert "Traceback" not in out + err, err
    assert got == rc, f"exit status {got}, expected {rc}; stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, found {len(lines)}: {err!r}"
    assert lines[0].startswith(prefix), lines[0]
    assert message in lines[0], lines[0]
    for p, content in existing.items():  # nothing replaced
        assert p.read_bytes() == content, p
    assert sorted(p.name for p in out_dir.iterdir()) == before  # nothing written, no temporary file left
    if (tmp_path / "read_only").exists():
        assert list((tmp_path / "read_only").iterdir()) == []


@pytest.mark.parametrize(
    "argv, target",
    [
        pytest.param(SIM, "diffrecon.datasets.ct_simulation.simulate_ct", id="simulate"),
        pytest.param([*MRI, "--coils", "2"], "diffrecon.datasets.mri_simulation.simulate_multicoil",
                     id="simulate-mri"),
        pytest.param(FBP, "diffrecon.recon.analytic.fbp", id="reconstruct-fbp"),
        pytest.param([*KSP, "zerofill"], "diffrecon.recon.mri.zero_filled_rss", id="reconstruct-mri"),
        pytest.param(HSI, "diffrecon.recon.hsi_baselines.tv_restore", id="hsi-restore"),
    ],
)
def test_sigterm_is_one_line_and_leaves_nothing(argv, target, corpus, tmp_path, capsys, monkeypatch):
    """Audit row 7: SIGTERM in the middle of the work is handled like Ctrl-C by every command: exit 143,
    one line on stderr, no output and no hidden temporary file."""
    import importlib

    module_name, func = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, func)

    def terminated_midway(*args, **kwargs):
        # without the CLI's handler the signal would kill the test process: fail instead
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, func, terminated_midway)
    argv, _, out_dir = _expand(argv, corpus, tmp_path)
    rc, out, err = _run(argv, capsys)
    command = "hsi restore" if argv[0] == "hsi" else argv[0]
    assert rc == 143 and "Traceback" not in out + err
    assert err.splitlines() == [f"diffrecon {command}: terminated (SIGTERM)"]
    assert list(out_dir.iterdir()) == []


def test_corpus_covers_every_command_and_audit_row():
    """Every sub-command of the CLI has bad-input cases, and every audit row reachable from the CLI is
    covered (row 7 by the SIGTERM test)."""
    from diffrecon.cli import COMMANDS

    ids = [p.id for p in _cases()]
    for name, _ in COMMANDS:
        assert any(i.startswith(f"{name}-") for i in ids), name
    rows = {int(part[1:]) for i in ids for part in i.split("-") if part[:1] == "r" and part[1:].isdigit()}
    assert rows | {7} == set(range(1, 11))
