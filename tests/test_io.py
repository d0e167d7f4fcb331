"""NIfTI and sinogram I/O: round trips keep affine/header/geometry; bad files give clear errors."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from diffrecon import FileFormatError, GeometryError, InputDataError, OutputExistsError
from diffrecon.io import atomic_path, load_nifti, load_sinogram, save_nifti, save_sinogram
from diffrecon.operators import ParallelGeometry, sparse_angles


def _affine():
    a = np.diag([1.5, -2.0, 3.0, 1.0])
    a[:3, 3] = [10.0, -20.0, 5.0]
    return a


def test_nifti_roundtrip_keeps_affine_and_header(tmp_path):
    src = tmp_path / "src.nii.gz"
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"source volume"
    nib.save(img, src)
    vol, affine, header = load_nifti(src)
    assert vol.dtype == torch.float32 and vol.shape == (4, 5, 6)
    np.testing.assert_allclose(affine, _affine())
    out = tmp_path / "out.nii.gz"
    save_nifti(out, vol * 0.5, affine, header)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, _affine())
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert back.header["descrip"].tobytes().startswith(b"source volume")
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(back.dataobj), data * 0.5)


def test_save_nifti_refuses_to_overwrite(tmp_path):
    out = tmp_path / "x.nii.gz"
    save_nifti(out, torch.zeros(2, 2, 2))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_nifti(out, torch.ones(2, 2, 2))
    assert np.asarray(nib.load(out).dataobj).max() == 0  # untouched
    save_nifti(out, torch.ones(2, 2, 2), overwrite=True)
    assert np.asarray(nib.load(out).dataobj).min() == 1


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed half-way")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"not a nifti file at all"])
def test_load_nifti_unreadable(tmp_path, content):
    p = tmp_path / "bad.nii.gz"
    p.write_bytes(content)
    with pytest.raises(FileFormatError, match="not a readable NIfTI"):
        load_nifti(p)
    with pytest.raises(FileFormatError, match="no such file"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_load_nifti_rejects_nan_and_wrong_rank(tmp_path):
    p = tmp_path / "nan.nii.gz"
    d = np.zeros((3, 3, 3), np.float32)
    d[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(d, np.eye(4)), p)
    with pytest.raises(InputDataError, match="NaN"):
        load_nifti(p)
    p2 = tmp_path / "2d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3), np.float32), np.eye(4)), p2)
    with pytest.raises(InputDataError, match="3-D"):
        load_nifti(p2)


def _geom():
    return ParallelGeometry((6, 5), sparse_angles(3), 9, 1.0)


def test_sinogram_roundtrip(tmp_path):
    g = _geom()
    sino = torch.randn(4, 3, 9)
    p = tmp_path / "s.npz"
    save_sinogram(p, sino, g, {"slice_axis": 2, "affine": _affine(), "noise_sigma": 0.1})
    f = load_sinogram(p)
    torch.testing.assert_close(f.sinogram, sino)
    assert f.geometry.to_dict() == g.to_dict()
    assert f.slice_axis == 2
    np.testing.assert_allclose(f.affine, _affine())
    with np.load(p, allow_pickle=False) as z:  # geometry stored beside the data as JSON
        assert json.loads(str(z["geometry"]))["kind"] == "parallel"


def test_sinogram_errors(tmp_path):
    g = _geom()
    with pytest.raises(InputDataError, match=r"\(n_slices, 3 angles, 9 detectors\).*found \(4, 3, 8\)"):
        save_sinogram(tmp_path / "a.npz", torch.zeros(4, 3, 8), g)
    p = tmp_path / "b.npz"
    np.savez(p, sinogram=np.zeros((2, 3, 9), np.float32))
    with pytest.raises(FileFormatError, match="missing.*geometry"):
        load_sinogram(p)
    p2 = tmp_path / "c.npz"
    np.savez(p2, sinogram=np.zeros((2, 3, 9), np.float32), geometry=np.array(json.dumps({"kind": "helix"})))
    with pytest.raises(GeometryError, match="kind"):
        load_sinogram(p2)
    p3 = tmp_path / "d.npz"
    bad = np.zeros((2, 3, 9), np.float32)
    bad[0, 0, 0] = np.inf
    np.savez(p3, sinogram=bad, geometry=np.array(json.dumps(g.to_dict())))
    with pytest.raises(InputDataError, match="NaN/Inf"):
        load_sinogram(p3)
    p4 = tmp_path / "e.npz"
    p4.write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="not a readable"):
        load_sinogram(p4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"angles": []}, "at least one view"),
        ({"angles": [0.0, float("nan")]}, "finite"),
        ({"n_detectors": 0}, "positive integer"),
        ({"detector_spacing": -1.0}, "positive"),
        ({"image_shape": (5,)}, "2 positive integers"),
    ],
)
def test_geometry_validation(kwargs, match):
    args = {"image_shape": (6, 5), "angles": sparse_angles(3), "n_detectors": 9, "detector_spacing": 1.0,
            **kwargs}
    with pytest.raises(GeometryError, match=match):
        ParallelGeometry(**args)


def _sinogram_variant(tmp_path, name, geometry=None, metadata=None):
    """A valid 6-view sinogram file with some geometry / metadata entries replaced."""
    good = tmp_path / "good.npz"
    if not good.exists():
        geom = ParallelGeometry((16, 16), sparse_angles(6), 23)
        save_sinogram(good, torch.zeros(4, 6, 23), geom, {"slice_axis": 2, "volume_shape": [16, 16, 4]})
    with np.load(good, allow_pickle=False) as z:
        arrays = dict(z)
    g, m = json.loads(str(arrays["geometry"])), json.loads(str(arrays["metadata"]))
    g.update(geometry or {})
    m.update(metadata or {})
    path = tmp_path / f"{name}.npz"
    np.savez(path, sinogram=arrays["sinogram"], geometry=json.dumps(g), metadata=json.dumps(m))
    return path


def test_sinogram_files_with_bad_entries_are_refused_before_any_work(tmp_path, monkeypatch):
    """Issue 19 audit rows 8-10: bad field types, inconsistent shapes and huge claimed sizes."""
    assert load_sinogram(_sinogram_variant(tmp_path, "ok")).sinogram.shape == (4, 6, 23)
    with pytest.raises(GeometryError, match="bad or missing fields"):
        load_sinogram(_sinogram_variant(tmp_path, "det", geometry={"n_detectors": "abc"}))
    with pytest.raises(FileFormatError, match="slice_axis must be an integer"):
        load_sinogram(_sinogram_variant(tmp_path, "axis", metadata={"slice_axis": "x"}))
    with pytest.raises(InputDataError, match="does not match the data"):
        load_sinogram(_sinogram_variant(tmp_path, "vshape", metadata={"volume_shape": [16, 16, 9]}))
    # a few-KB file claiming 60000² slices is refused by the memory estimate, not by the kernel's OOM killer
    huge = _sinogram_variant(tmp_path, "huge", geometry={"image_shape": [60000, 60000]},
                             metadata={"volume_shape": [60000, 60000, 4]})
    monkeypatch.setenv("DIFFRECON_MAX_VOLUME_GB", "8")
    with pytest.raises(InputDataError, match=r"53\.6 GiB per volume"):
        load_sinogram(huge)


def test_complex_and_oversized_niftis_are_refused_from_the_header(tmp_path, monkeypatch):
    """Issue 19 audit rows 8 and 9: a complex volume lost its imaginary part with only a warning, and a
    header could claim any size; both are refused before a voxel is read."""
    import warnings

    p = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.complex64), np.eye(4)), p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning on the way
        with pytest.raises(InputDataError, match="complex.*magnitude.*real part"):
            load_nifti(p)
    big = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    big.header.set_data_shape((4096, 4096, 64))  # 4 GiB of float32 claimed by a 352-byte header
    (tmp_path / "big.nii").write_bytes(big.header.binaryblock + b"\0" * 4)
    monkeypatch.setenv("DIFFRECON_MAX_VOLUME_GB", "1")
    with pytest.raises(InputDataError, match=r"4096x4096x64 float32 image would need 8\.0 GiB"):
        load_nifti(tmp_path / "big.nii")
    monkeypatch.setenv("DIFFRECON_MAX_VOLUME_GB", "lots")
    with pytest.raises(InputDataError, match="DIFFRECON_MAX_VOLUME_GB='lots'"):
        load_nifti(tmp_path / "big.nii")


def test_outputs_that_are_folders_or_under_files_are_refused_before_work(tmp_path):
    from diffrecon.io import check_writable

    (tmp_path / "out.nii.gz").mkdir()
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match="is a directory"):
            check_writable(tmp_path / "out.nii.gz", overwrite)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="a file stands"):
        check_writable(tmp_path / "file" / "sub" / "x.npz")
    assert check_writable(tmp_path / "new" / "deeper" / "x.npz") == tmp_path / "new" / "deeper" / "x.npz"


def test_written_files_get_the_mode_of_a_plain_file_even_when_the_writer_replaces_them(tmp_path):
    """Issue 19 audit row 10: exported .safetensors were 0600 while their JSON was 0644 (safetensors
    writes a new owner-only file in place of the temporary one)."""
    import os

    from diffrecon.priors import load, save_prior

    umask = os.umask(0o022)
    try:
        w, j = save_prior(load("head-64"), tmp_path / "exported")
        with atomic_path(tmp_path / "replaced.bin") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (w, j, tmp_path / "replaced.bin")}
    assert set(modes.values()) == {0o644}, modes
