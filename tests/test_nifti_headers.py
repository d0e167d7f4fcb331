"""NIfTI headers survive simulate → reconstruct: qform/sform matrices and codes, units, pixdim, dim_info
and every other field of the source's header, field by field against nibabel; descrip names the method."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.errors import FileFormatError, InputDataError
from diffrecon.io import (
    header_bytes,
    header_from_bytes,
    load_sinogram,
    output_header,
    save_nifti,
    save_sinogram,
)

SHAPE = (16, 16, 4)


def rotated_affine(shift=(0.0, 0.0, 0.0)):
    """A rotated, non-RAS, anisotropic voxel-to-mm affine (orientation codes neither RAS nor LAS)."""
    from scipy.spatial.transform import Rotation

    a = np.eye(4)
    rot = Rotation.from_euler("xyz", [20, -30, 110], degrees=True).as_matrix()
    a[:3, :3] = rot @ np.diag([0.8, 1.1, 2.5])
    a[:3, 3] = np.array([-10.0, 20.0, 5.0]) + np.asarray(shift)
    return a


def make_source(path, sform_shift=(0.0, 0.0, 0.0), klass=nib.Nifti1Image, int16=False):
    """Write a 16×16×4 source volume: qform code 1 (scanner), sform code 4 (MNI) — ``sform_shift`` mm away
    from the qform when non-zero —, units mm and s, dim_info, slice timing fields, a TR and a descrip."""
    rng = np.random.default_rng(0)
    data = rng.random(SHAPE).astype(np.float32)
    img = klass(data, None)
    h = img.header
    if int16:
        h.set_data_dtype(np.int16)  # nibabel picks a slope and intercept when it saves
    h.set_qform(rotated_affine(), code=1)
    h.set_sform(rotated_affine(sform_shift), code=4)
    h.set_xyzt_units("mm", "sec")
    h.set_dim_info(freq=0, phase=1, slice=2)
    h["pixdim"][4] = 2.0  # TR, kept as is
    h["slice_duration"] = 0.5
    h["descrip"] = b"source volume"
    nib.save(img, path)
    return path


def header_differences(a, b, skip=("descrip",)):
    """Field names where two nibabel headers differ (NaN equals NaN)."""
    out = []
    for key in a.keys():
        if key in skip:
            continue
        x, y = np.asarray(a[key]), np.asarray(b[key])
        same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y)
        if not same:
            out.append(key)
    return out


def assert_header_follows(source, out, descrip):
    """``out`` is ``source`` field by field, bar descrip, float32 and no scaling."""
    np.testing.assert_array_equal(out.get_qform(), source.get_qform())
    np.testing.assert_array_equal(out.get_sform(), source.get_sform())
    assert int(out["qform_code"]) == int(source["qform_code"])
    assert int(out["sform_code"]) == int(source["sform_code"])
    assert out.get_xyzt_units() == source.get_xyzt_units()
    np.testing.assert_array_equal(out["pixdim"], source["pixdim"])
    np.testing.assert_array_equal(out["dim"], source["dim"])
    assert out.get_dim_info() == source.get_dim_info()
    assert out["descrip"].tobytes().rstrip(b"\0") == descrip.encode()
    assert out.get_data_dtype() == np.float32
    assert out.get_slope_inter() == (None, None)
    skip = ("descrip", "datatype", "bitpix", "scl_slope", "scl_inter", "vox_offset", "magic")
    assert header_differences(source, out, skip) == []


@pytest.mark.parametrize("sform_shift", [(0.0, 0.0, 0.0), (3.0, -2.0, 1.0)], ids=["same", "qform-neq-sform"])
def test_simulate_reconstruct_cli_keeps_the_source_header(tmp_path, sform_shift, capsys):
    src = make_source(tmp_path / "in.nii.gz", sform_shift)
    sino, out = tmp_path / "sino.npz", tmp_path / "fbp.nii.gz"
    assert main(["simulate", str(src), str(sino), "--views", "6"]) == 0
    assert main(["reconstruct", str(sino), str(out), "--method", "fbp"]) == 0
    source, result = nib.load(src), nib.load(out)
    assert result.shape == SHAPE
    np.testing.assert_array_equal(result.affine, source.affine)
    assert_header_follows(source.header, result.header, "diffrecon reconstruct fbp")
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)
    # the sinogram carries the header's raw bytes
    with np.load(sino) as z:
        assert z["nifti_header"].dtype == np.uint8 and z["nifti_header"].shape == (348,)
    assert load_sinogram(sino).header.binaryblock == source.header.binaryblock


def test_scaled_int16_source_gives_an_unscaled_float32_output(tmp_path, capsys):
    src = make_source(tmp_path / "in.nii.gz", int16=True)
    sino, out = tmp_path / "sino.npz", tmp_path / "fbp.nii.gz"
    assert main(["simulate", str(src), str(sino), "--views", "6"]) == 0
    assert main(["reconstruct", str(sino), str(out), "--method", "fbp"]) == 0
    source, result = nib.load(src), nib.load(out)
    assert source.get_data_dtype() == np.int16 and source.dataobj.slope != 1.0  # (kept in the proxy)
    assert result.get_data_dtype() == np.float32 and result.header.get_slope_inter() == (None, None)
    assert_header_follows(source.header, result.header, "diffrecon reconstruct fbp")


def test_nifti2_source_gives_a_nifti1_output_with_the_same_fields(tmp_path, capsys):
    src = make_source(tmp_path / "in.nii", klass=nib.Nifti2Image)
    sino, out = tmp_path / "sino.npz", tmp_path / "fbp.nii.gz"
    assert main(["simulate", str(src), str(sino), "--views", "6"]) == 0
    with np.load(sino) as z:
        assert z["nifti_header"].shape == (540,)  # stored as NIfTI-2, converted when the output is written
    assert main(["reconstruct", str(sino), str(out), "--method", "fbp"]) == 0
    source, result = nib.load(src).header, nib.load(out).header
    assert type(result) is nib.Nifti1Header and result["magic"] == b"n+1"
    np.testing.assert_allclose(result.get_qform(), source.get_qform(), atol=1e-5)
    np.testing.assert_allclose(result.get_sform(), source.get_sform(), atol=1e-5)
    assert (int(result["qform_code"]), int(result["sform_code"])) == (1, 4)
    assert result.get_xyzt_units() == ("mm", "sec") and result.get_dim_info() == (0, 1, 2)
    np.testing.assert_allclose(result["pixdim"], source["pixdim"], rtol=1e-6)
    np.testing.assert_array_equal(result["dim"], source["dim"])


def test_header_bytes_round_trip_nifti1_nifti2_and_big_endian():
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        img = klass(np.zeros(SHAPE, np.float32), None)
        img.header.set_qform(rotated_affine(), 1)
        img.header.set_sform(rotated_affine((1, 2, 3)), 4)
        for hdr in (img.header, img.header.as_byteswapped(">")):
            raw = header_bytes(hdr)
            assert raw.dtype == np.uint8 and raw.shape == (len(hdr.binaryblock),)
            back = header_from_bytes(raw)
            assert type(back) is type(hdr) and back.binaryblock == hdr.binaryblock
            assert back.endianness == hdr.endianness
            np.testing.assert_array_equal(back.get_sform(), hdr.get_sform())
    plain = nib.Nifti1Header()
    assert header_from_bytes(bytes(header_bytes(plain))).binaryblock == plain.binaryblock
    with pytest.raises(InputDataError, match="from_header"):
        header_bytes(nib.AnalyzeHeader())


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:300], "348 .* or 540"),
    (lambda b: b.astype(np.int16), "uint8"),
    (lambda b: b.reshape(4, 87), "1-D"),
    (lambda b: np.concatenate([b[:344], np.frombuffer(b"xyz\0", np.uint8)]), "magic"),
    (lambda b: np.concatenate([np.zeros(4, np.uint8), b[4:]]), "sizeof_hdr"),
], ids=["short", "int16", "2-D", "bad-magic", "bad-sizeof_hdr"])
def test_header_from_bytes_refuses_what_is_not_a_nifti_header(damage, match):
    raw = header_bytes(nib.Nifti1Header())
    with pytest.raises(FileFormatError, match=match):
        header_from_bytes(damage(raw))


def test_output_header_sets_descrip_float32_and_clears_scaling_and_intent():
    src = nib.Nifti1Header()
    src.set_data_dtype(np.int16)
    src.set_slope_inter(2.0, 1.0)
    src.set_intent("label")
    src.set_qform(rotated_affine(), 1)
    out = output_header(src, "x" * 100)
    assert out["descrip"].tobytes() == b"x" * 80
    assert out.get_data_dtype() == np.float32 and out.get_slope_inter() == (None, None)
    assert out.get_intent()[0] == "none"
    assert src.get_data_dtype() == np.int16 and src.get_intent()[0] == "label"  # the source is untouched
    out2 = output_header(nib.Nifti2Header.from_header(src), "n2")
    assert type(out2) is nib.Nifti1Header and int(out2["qform_code"]) == 1


def test_save_nifti_header_wins_when_it_equals_the_affine(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_qform(rotated_affine(), 1)
    hdr.set_sform(rotated_affine((3, 0, 0)), 4)
    hdr.set_xyzt_units("mm")
    vol = torch.rand(SHAPE)
    # the affine is the sform, as load_nifti reports it: both matrices and both codes are kept
    save_nifti(tmp_path / "a.nii.gz", vol, hdr.get_best_affine(), hdr)
    a = nib.load(tmp_path / "a.nii.gz").header
    assert (int(a["qform_code"]), int(a["sform_code"])) == (1, 4)
    np.testing.assert_array_equal(a.get_qform(), hdr.get_qform())
    np.testing.assert_array_equal(a.get_sform(), hdr.get_sform())
    # a header and no affine: the header's as they are
    save_nifti(tmp_path / "b.nii.gz", vol, None, hdr)
    b = nib.load(tmp_path / "b.nii.gz").header
    assert header_differences(a, b) == []
    # a different affine (a sub-volume): written as qform and sform, each with the header's code
    shifted = rotated_affine((0, 0, 7))
    save_nifti(tmp_path / "c.nii.gz", vol, shifted, hdr)
    c = nib.load(tmp_path / "c.nii.gz")
    assert (int(c.header["qform_code"]), int(c.header["sform_code"])) == (1, 4)
    np.testing.assert_allclose(c.affine, shifted, atol=1e-5)
    np.testing.assert_allclose(c.header.get_qform(), shifted, atol=1e-5)
    assert c.header.get_xyzt_units() == ("mm", "unknown")
    # no header: nibabel's defaults for a new image (sform aligned, no qform), as before
    save_nifti(tmp_path / "d.nii.gz", vol, shifted)
    d = nib.load(tmp_path / "d.nii.gz").header
    assert (int(d["qform_code"]), int(d["sform_code"])) == (0, 2)
    with pytest.raises(InputDataError, match="NIfTI-1 or NIfTI-2 header"):
        save_nifti(tmp_path / "e.nii.gz", vol, shifted, nib.AnalyzeHeader())


def _own_sinogram(tmp_path, metadata, header=None):
    """A user's own sinogram of a 16×16×4 volume (slices along axis 2), written with save_sinogram."""
    from diffrecon.operators import SliceWise
    from diffrecon.operators.ct import ParallelBeam2D, sparse_angles

    op2d = ParallelBeam2D(SHAPE[:2], sparse_angles(6))
    sino = SliceWise(op2d, axis=2)(torch.rand(SHAPE))
    path = tmp_path / "own.npz"
    save_sinogram(path, sino, op2d.geometry, metadata, header=header)
    return path


def test_sinograms_without_a_header_get_the_affine_alone(tmp_path, capsys):
    path = _own_sinogram(tmp_path, {"slice_axis": 2, "affine": rotated_affine()})
    with np.load(path) as z:
        assert "nifti_header" not in z.files  # the layout of files written before headers were stored
    assert load_sinogram(path).header is None
    out = tmp_path / "fbp.nii.gz"
    assert main(["reconstruct", str(path), str(out), "--method", "fbp"]) == 0
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, rotated_affine(), atol=1e-6)
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (0, 2)


def test_a_damaged_stored_header_is_a_clear_file_format_error(tmp_path, capsys):
    path = _own_sinogram(tmp_path, {"slice_axis": 2})
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    np.savez(path, **entries, nifti_header=np.zeros(348, np.uint8))
    with pytest.raises(FileFormatError, match="nifti_header.*sizeof_hdr"):
        load_sinogram(path)
    np.savez(path, **entries, nifti_header=np.zeros(10, np.float32))
    with pytest.raises(FileFormatError, match="348 or 540 uint8"):
        load_sinogram(path)
    assert main(["reconstruct", str(path), str(tmp_path / "x.nii.gz"), "--method", "fbp"]) == 1
    assert "nifti_header" in capsys.readouterr().err


def test_reference_gives_a_users_sinogram_the_header_of_a_volume(tmp_path, capsys):
    ref = make_source(tmp_path / "ref.nii.gz", (1.0, 1.0, 1.0))
    path = _own_sinogram(tmp_path, {"slice_axis": 2})  # no affine, no header
    out = tmp_path / "fbp.nii.gz"
    assert main(["reconstruct", str(path), str(out), "--method", "fbp", "--reference", str(ref)]) == 0
    assert_header_follows(nib.load(ref).header, nib.load(out).header, "diffrecon reconstruct fbp")
    assert json.loads((tmp_path / "fbp.json").read_text())["reference"] == str(ref)
    # --reference wins over a header stored in the sinogram
    other = nib.Nifti1Header()
    other.set_sform(np.diag([3.0, 3.0, 3.0, 1.0]), 2)
    path2 = _own_sinogram(tmp_path / "b", {"slice_axis": 2}, header=other)
    out2 = tmp_path / "fbp2.nii.gz"
    assert main(["reconstruct", str(path2), str(out2), "--method", "fbp", "--reference", str(ref)]) == 0
    np.testing.assert_array_equal(nib.load(out2).affine, nib.load(ref).affine)
    # without --reference the stored header is used
    out3 = tmp_path / "fbp3.nii.gz"
    assert main(["reconstruct", str(path2), str(out3), "--method", "fbp"]) == 0
    np.testing.assert_array_equal(nib.load(out3).affine, np.diag([3.0, 3.0, 3.0, 1.0]))
    assert int(nib.load(out3).header["sform_code"]) == 2


def test_reference_of_another_shape_is_refused_before_any_work(tmp_path, capsys):
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.float32), np.eye(4)), small)
    path = _own_sinogram(tmp_path, {"slice_axis": 2})
    out = tmp_path / "fbp.nii.gz"
    assert main(["reconstruct", str(path), str(out), "--method", "fbp", "--reference", str(small)]) == 1
    err = capsys.readouterr().err
    assert "(16, 16, 3) differs from the reconstruction's (16, 16, 4)" in err
    assert not out.exists()
    assert main(["reconstruct", str(path), str(out), "--method", "fbp", "--reference",
                 str(tmp_path / "missing.nii.gz")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_mri_simulate_reconstruct_keeps_the_source_header(tmp_path, suffix):
    """The MRI path stores the source header in the k-space file (``nifti_hdr``) and writes it back."""
    from diffrecon.io.kspace import load_kspace

    src = make_source(tmp_path / "src.nii.gz")
    k = tmp_path / f"k{suffix}"
    assert main(["simulate", str(src), str(k), "--modality", "mri", "--coils", "2", "--acceleration", "2",
                 "--calib", "8", "--slice-axis", "2"]) == 0
    stored = load_kspace(k).header
    assert header_differences(nib.load(src).header, stored, skip=()) == []
    out = tmp_path / "rec.nii.gz"
    assert main(["reconstruct", str(k), str(out), "--method", "zerofill"]) == 0
    assert_header_follows(nib.load(src).header, nib.load(out).header, "diffrecon reconstruct zerofill")


def test_kspace_files_refuse_a_damaged_header(tmp_path):
    from diffrecon.io.kspace import load_kspace, save_kspace

    k = torch.ones(1, 1, 4, 4, dtype=torch.complex64)
    with pytest.raises(FileFormatError):
        save_kspace(tmp_path / "bad.npz", k, header=np.zeros(348, np.uint8))
    good = save_kspace(tmp_path / "ok.npz", k)
    assert load_kspace(good).header is None
    with np.load(good) as z:
        arrays = dict(z)
    arrays["nifti_hdr"] = np.zeros(348, np.uint8)
    np.savez(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(FileFormatError, match="nifti_hdr"):
        load_kspace(tmp_path / "damaged.npz")
