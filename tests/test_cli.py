"""The command line end to end on tiny volumes: simulate → reconstruct, demo, errors, --overwrite."""

import json

import nibabel as nib
import numpy as np
import pytest

from diffrecon.cli import main
from diffrecon.datasets.phantoms import shepp_logan_3d


@pytest.fixture
def volume_file(tmp_path):
    vol = shepp_logan_3d((6, 24, 24)).numpy().transpose(1, 2, 0)  # (x, y, z) with z last, as NIfTI RAS
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-24.0, -24.0, -9.0]
    p = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), p)
    return p, affine


def test_simulate_then_reconstruct_keeps_affine(tmp_path, volume_file, capsys):
    src, affine = volume_file
    sino = tmp_path / "sino.npz"
    assert main(["simulate", str(src), str(sino), "--views", "12", "--noise", "0.01", "--seed", "3"]) == 0
    meta = json.loads((tmp_path / "sino.json").read_text())
    assert meta["slice_axis"] == 2 and meta["geometry"]["kind"] == "parallel"
    # "tv" is the accepted alias of admm_tv: the record carries the canonical (library) name
    for method, canonical, extra in [("fbp", "fbp", []), ("tv", "admm_tv", ["--iters", "20", "--quiet"])]:
        out = tmp_path / f"{method}.nii.gz"
        assert main(["reconstruct", str(sino), str(out), "--method", method, *extra]) == 0
        img = nib.load(out)
        np.testing.assert_allclose(img.affine, affine)
        assert img.shape == (24, 24, 6)
        truth = np.asarray(nib.load(src).dataobj)
        err = np.linalg.norm(np.asarray(img.dataobj) - truth) / np.linalg.norm(truth)
        assert err < 0.6, (method, err)
        record = json.loads((tmp_path / f"{method}.json").read_text())
        assert record["method"] == canonical and record["seconds"] >= 0
    # the canonical name gives the very same reconstruction
    out = tmp_path / "admm_tv.nii.gz"
    assert main(["reconstruct", str(sino), str(out), "--method", "admm_tv", "--iters", "20", "--quiet"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj),
                                  np.asarray(nib.load(tmp_path / "tv.nii.gz").dataobj))
    assert json.loads((tmp_path / "admm_tv.json").read_text())["method"] == "admm_tv"


def test_method_aliases_map_to_the_library_names(capsys):
    from diffrecon.cli import build_parser
    from diffrecon.commands._common import METHOD_ALIASES, canonical_method
    from diffrecon.commands.mri import MRI_METHODS
    from diffrecon.commands.reconstruct import CT_METHODS
    from diffrecon.demo import METHODS as DEMO_METHODS

    assert METHOD_ALIASES == {"tv": "admm_tv", "mbir": "diffusion_mbir"}
    assert canonical_method("tv") == "admm_tv" and canonical_method("mbir") == "diffusion_mbir"
    assert canonical_method("dds") == "dds" and canonical_method("fbp") == "fbp"
    # every command lists canonical names only, and they are the demo's / metrics.json's
    for names in (CT_METHODS, MRI_METHODS):
        assert not set(names) & set(METHOD_ALIASES)
    assert set(DEMO_METHODS) <= set(CT_METHODS)
    parser = build_parser()
    for alias, canonical in METHOD_ALIASES.items():
        args = parser.parse_args(["reconstruct", "in.npz", "out.nii.gz", "--method", alias])
        assert args.method == canonical
        same = parser.parse_args(["reconstruct", "in.npz", "out.nii.gz", "--method", canonical])
        assert same.method == canonical
    args = parser.parse_args(["demo", "--methods", "fbp", "tv", "mbir"])
    assert args.methods == ["fbp", "admm_tv", "diffusion_mbir"]
    with pytest.raises(SystemExit):
        parser.parse_args(["reconstruct", "in.npz", "out.nii.gz", "--method", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_same_seed_same_sinogram(tmp_path, volume_file):
    src, _ = volume_file
    for name in ("a", "b"):
        assert main(["simulate", str(src), str(tmp_path / f"{name}.npz"),
                     "--noise", "0.05", "--seed", "7"]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a["sinogram"], b["sinogram"])


def test_outputs_are_not_overwritten_without_flag(tmp_path, volume_file, capsys):
    src, _ = volume_file
    sino = tmp_path / "sino.npz"
    assert main(["simulate", str(src), str(sino)]) == 0
    before = sino.read_bytes()
    assert main(["simulate", str(src), str(sino), "--views", "3"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sino.read_bytes() == before
    assert main(["simulate", str(src), str(sino), "--views", "3", "--overwrite"]) == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["simulate", "{missing}", "{out}"], "no such file"),
        (["reconstruct", "{garbage}", "{out_nii}", "--method", "fbp"], "not a readable"),
        (["simulate", "{src}", "{out}", "--views", "0"], "positive"),
        (["simulate", "{src}", "{out}", "--slice-axis", "7"], "--slice-axis"),
        # issue 19 audit: nonsense iteration counts are refused, not turned into an all-zero volume
        (["reconstruct", "{sino}", "{out_nii}", "--method", "admm_tv", "--iters", "0"], "n_iter >= 1"),
        (["simulate", "{src}", "{out}", "--detectors", "0"], "n_detectors >= 1"),
        (["simulate", "{src}", "{out}", "--arc", "0"], "arc_degrees in (0, 360]"),
        (["reconstruct", "{sino}", "{out_nii}", "--method", "admm_tv", "--cg-iters", "-2"], "cg_iter >= 1"),
    ],
)
def test_cli_errors_are_clear(tmp_path, volume_file, capsys, argv, message):
    src, _ = volume_file
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"nope")
    sino = tmp_path / "sino.npz"
    if "{sino}" in argv:
        assert main(["simulate", str(src), str(sino), "--views", "6"]) == 0
    subs = {"{sino}": str(sino), "{missing}": str(tmp_path / "nope.nii.gz"), "{out}": str(tmp_path / "o.npz"),
            "{src}": str(src), "{garbage}": str(garbage), "{out_nii}": str(tmp_path / "o.nii.gz")}
    assert main([subs.get(a, a) for a in argv]) == 1
    assert message in capsys.readouterr().err


def test_demo_writes_all_outputs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--volume", "phantom", "--size", "16", "--views", "8",
                 "--quiet"]) == 0
    for f in ("truth.nii.gz", "sinogram.npz", "fbp.nii.gz", "admm_tv.nii.gz", "montage.png", "metrics.json"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    for name in ("fbp", "admm_tv"):
        entry = m["methods"][name]
        assert (set(entry["psnr"]) == {"axial", "coronal", "sagittal"}
                and set(entry["ssim"]) == set(entry["psnr"]))
        assert entry["seconds"] >= 0 and "nfe" in entry
    assert (np.mean(list(m["methods"]["admm_tv"]["psnr"].values()))
            > np.mean(list(m["methods"]["fbp"]["psnr"].values())))
    # refuses to clobber without --overwrite
    assert main(["demo", "--out", str(out), "--volume", "phantom", "--size", "16", "--quiet"]) == 1


def test_demo_head_volume_with_diffusion_methods(tmp_path):
    """The default demo data (held-out head, axial = array axis 2) with both diffusion solvers, few steps."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--methods", "fbp", "dds", "diffusion_mbir", "--dds-steps", "2",
            "--mbir-steps", "2", "--quiet"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["settings"]["slice_axis"] == 2
            and m["settings"]["planes"] == {"axial": 2, "coronal": 1, "sagittal": 0})
    assert m["methods"]["dds"]["nfe"] == 2 and m["methods"]["diffusion_mbir"]["nfe"] == 2  # predictor-only
    for name in ("fbp", "dds", "diffusion_mbir"):
        entry = m["methods"][name]
        assert (out / f"{name}.nii.gz").exists()
        assert all(np.isfinite(v) for v in entry["psnr"].values()) and entry["peak_memory_mb"] > 0
    assert m["methods"]["dds"]["settings"]["prior"] == "head-64"
    # the sinogram it wrote reconstructs with the CLI (slice axis and affine carried over)
    assert main(["reconstruct", str(out / "sinogram.npz"), str(tmp_path / "fbp.nii.gz"),
                 "--method", "fbp"]) == 0
    import nibabel as nib

    a = nib.load(str(tmp_path / "fbp.nii.gz"))
    b = nib.load(str(out / "fbp.nii.gz"))
    np.testing.assert_allclose(a.affine, b.affine)
    np.testing.assert_allclose(np.asarray(a.dataobj), np.asarray(b.dataobj), atol=1e-4)


def test_demo_rejects_a_prior_of_the_wrong_size_before_work(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--volume", "phantom", "--size", "16", "--methods", "dds",
               "--quiet"])
    assert rc == 1 and not out.exists()
    assert "64×64" in capsys.readouterr().err


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out


def test_device_output_name_and_file_system_errors_are_one_line(tmp_path, volume_file, capsys, monkeypatch):
    """Issue 19 audit row 10: these used to end in raw tracebacks."""
    src, _ = volume_file
    sino = tmp_path / "sino.npz"
    assert main(["simulate", str(src), str(sino), "--views", "6"]) == 0
    base = ["reconstruct", str(sino)]
    for device, message in (("bogus", "expected cpu, cuda"), ("gpu", "expected cpu, cuda"),
                            ("meta", "runs on cpu or cuda"), ("mps", "runs on cpu or cuda")):
        capsys.readouterr()
        assert main([*base, str(tmp_path / "o.nii.gz"), "--method", "fbp", "--device", device]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main([*base, str(tmp_path / "o.npz"), "--method", "fbp"]) == 1
    assert "name the output .nii or .nii.gz" in capsys.readouterr().err
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # a read-only output folder, as a non-root user sees it
    assert main([*base, str(tmp_path / "o.nii.gz"), "--method", "fbp"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("diffrecon reconstruct: error: Permission denied") and str(tmp_path) in err
