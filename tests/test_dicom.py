"""DICOM series in and out: the loader against MONAI's and nibabel's readers on the series pydicom ships,
clear errors for what is not one regular series, the writer's round trip, and a DICOM series through
`diffrecon simulate` → `reconstruct` with the header and affine of its NIfTI conversion."""

import pathlib
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.errors import FileFormatError, InputDataError, MissingDependencyError, OutputExistsError
from diffrecon.io import load_dicom_series, load_volume, save_dicom_series, save_nifti

pydicom = pytest.importorskip("pydicom")  # the optional extra `data`
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CT_SMALL = pathlib.Path(get_testdata_file("CT_small.dcm"))  # one 128×128 int16 CT slice
# a real 5-slice 16×16 CT series (2.5 mm apart, stored from top to bottom) and two broken "series"
TESTDATA = CT_SMALL.parent / "dicomdirtests"
CT5N = TESTDATA / "98892001" / "CT5N"
CT2N_TWO_ORIENTATIONS = TESTDATA / "98892001" / "CT2N"
CT2_UNEVEN = TESTDATA / "77654033" / "CT2"
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS ↔ RAS


def oblique_affine(spacing=(0.7, 0.9, 2.0), handed=1.0, angles=(15.0, -10.0, 80.0), origin=(30, -40, 12)):
    """A RAS affine whose voxel frame is rotated off every axis; ``handed`` -1 flips the slice axis so the
    third column points against row × column in LPS."""
    from scipy.spatial.transform import Rotation

    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    lps = FLIP @ a
    if np.linalg.det(lps[:3, :3]) * handed < 0:
        a[:3, 2] *= -1
    a[:3, 3] = origin
    return a


def world(affine, shape):
    """World coordinates of every voxel centre, shape (*shape, 3)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return (idx @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def copy_series(folder, positions, slopes=None, names=None, **changes):
    """Copies of CT_small.dcm in ``folder`` at ImagePositionPatient ``positions`` (one series)."""
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    out = []
    for k, pos in enumerate(positions):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.InstanceNumber = k + 1
        if slopes is not None:
            ds.RescaleSlope, ds.RescaleIntercept = slopes[k]
        for key, value in changes.items():
            setattr(ds, key, value)
        path = folder / (names[k] if names else f"slice{k}.dcm")
        ds.save_as(path)
        out.append(path)
    return out


# --- the loader against independent readers -----------------------------------------------------------

@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_ct5n_series_matches_monai_and_nibabel():
    from monai.data import PydicomReader

    vol = load_dicom_series(CT5N)
    assert vol.data.dtype == torch.float32 and tuple(vol.data.shape) == (16, 16, 5)
    # ours: slices by increasing position along the normal (z up, -1.2375 … 8.7625 mm), affine in RAS
    np.testing.assert_allclose(vol.affine, [[-0.488281, 0, 0, 72.199997], [0, -0.488281, 0, 143.0],
                                            [0, 0, 2.5, -1.2375], [0, 0, 0, 1]], atol=1e-5)
    # MONAI (RAS too, columns × rows order) stacks this series from the top: the same voxels in space
    reader = PydicomReader()
    data, meta = reader.get_data(reader.read(str(CT5N)))
    m_aff = np.asarray(meta["affine"], dtype=np.float64)
    assert data.shape == tuple(vol.data.shape)
    ours = world(vol.affine, vol.data.shape)
    theirs = world(m_aff, data.shape)
    order = np.argsort(theirs[0, 0, :, 2])  # MONAI's slices, bottom first
    np.testing.assert_allclose(ours, theirs[:, :, order], atol=1e-4)
    np.testing.assert_allclose(vol.data.numpy(), np.asarray(data)[:, :, order], atol=1e-4)
    # nibabel's per-file wrapper (array rows × columns, LPS): the same plane for every slice
    from nibabel.nicom import dicomwrappers

    for k, path in enumerate(sorted(CT5N.iterdir(), key=lambda p: float(pydicom.dcmread(p).SliceLocation))):
        w = dicomwrappers.wrapper_from_file(str(path))
        n_aff = FLIP @ np.asarray(w.affine)  # RAS, voxel (row, column, ·)
        np.testing.assert_allclose(vol.affine[:3, 0], n_aff[:3, 1], atol=1e-6)  # our i: the column index
        np.testing.assert_allclose(vol.affine[:3, 1], n_aff[:3, 0], atol=1e-6)
        np.testing.assert_allclose(vol.affine @ [0, 0, k, 1], n_aff[:, 3], atol=1e-4)
        np.testing.assert_allclose(vol.data[:, :, k].numpy(), np.asarray(w.get_data()).T, atol=1e-4)


def test_ct5n_header_is_scanner_space_in_mm():
    vol = load_dicom_series(CT5N)
    h = vol.header
    assert isinstance(h, nib.Nifti1Header)
    assert (int(h["qform_code"]), int(h["sform_code"])) == (1, 1)
    assert h.get_xyzt_units() == ("mm", "unknown")
    np.testing.assert_allclose(h["pixdim"][1:4], [0.488281, 0.488281, 2.5], rtol=1e-6)
    np.testing.assert_allclose(h.get_sform(), vol.affine, atol=1e-4)
    np.testing.assert_allclose(h.get_qform(), vol.affine, atol=1e-4)
    assert tuple(h.get_data_shape()) == (16, 16, 5) and h.get_dim_info() == (None, None, 2)
    assert h["descrip"].tobytes().startswith(b"DICOM CT series")
    assert h.get_data_dtype() == np.float32


def test_copies_of_ct_small_are_sorted_by_position_and_rescaled_per_slice(tmp_path):
    z = [-75.7 + 5.0 * k for k in (2, 0, 3, 1)]  # files written out of order, names not in order
    slopes = [(1, -1024), (2, -2048), (1, -1000), (0.5, 0)]
    copy_series(tmp_path / "s", [(-158.135803, -179.035797, zk) for zk in z], slopes,
                names=["b.dcm", "d.dcm", "a.dcm", "c"])
    vol = load_dicom_series(tmp_path / "s")
    raw = pydicom.dcmread(CT_SMALL).pixel_array.astype(np.float64)
    by_z = sorted(range(4), key=lambda k: z[k])
    for k, src in enumerate(by_z):
        m, b = slopes[src]
        np.testing.assert_allclose(vol.data[:, :, k].numpy(), (raw * m + b).T, atol=1e-3)
    np.testing.assert_allclose(vol.affine[:3, 3], [158.135803, 179.035797, -75.7], atol=1e-4)
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([-0.661468, -0.661468, 5.0]), atol=1e-6)
    assert load_volume(tmp_path / "s").data.shape == vol.data.shape


# --- clear errors -------------------------------------------------------------------------------------

def test_a_single_file_or_a_single_slice_is_refused(tmp_path):
    with pytest.raises(InputDataError, match="single file is not a series"):
        load_dicom_series(CT_SMALL)
    with pytest.raises(InputDataError, match="single DICOM file is one slice.*folder"):
        load_volume(CT_SMALL)
    (tmp_path / "one").mkdir()
    shutil.copy(CT_SMALL, tmp_path / "one" / "x.dcm")
    with pytest.raises(InputDataError, match="single slice"):
        load_dicom_series(tmp_path / "one")


def test_missing_folders_and_folders_without_images(tmp_path):
    with pytest.raises(FileFormatError, match="no such folder"):
        load_dicom_series(tmp_path / "absent")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "README.txt").write_text("not DICOM")
    with pytest.raises(FileFormatError, match="no DICOM image files"):
        load_dicom_series(tmp_path / "e")
    with pytest.raises(FileFormatError, match="no DICOM image files"):
        load_dicom_series(TESTDATA)  # DICOMDIR indexes are skipped; sub-folders are not searched


def test_mixed_series_are_refused_unless_one_is_chosen(tmp_path):
    a = copy_series(tmp_path / "m", [(0, 0, 0), (0, 0, 5)], names=["a1", "a2"])
    copy_series(tmp_path / "m", [(0, 0, 0), (0, 0, 5), (0, 0, 10)], names=["b1", "b2", "b3"])
    with pytest.raises(InputDataError, match="holds 2 DICOM series .*2 files.*3 files|3 files.*2 files"):
        load_dicom_series(tmp_path / "m")
    uid = str(pydicom.dcmread(a[0]).SeriesInstanceUID)
    assert load_dicom_series(tmp_path / "m", series_uid=uid).data.shape == (128, 128, 2)
    with pytest.raises(InputDataError, match="no series with SeriesInstanceUID 1.2.3"):
        load_dicom_series(tmp_path / "m", series_uid="1.2.3")


def test_missing_position_tags_are_refused(tmp_path):
    files = copy_series(tmp_path / "p", [(0, 0, 0), (0, 0, 5)])
    ds = pydicom.dcmread(files[1])
    del ds.ImagePositionPatient
    ds.save_as(files[1])
    with pytest.raises(InputDataError, match="missing or malformed ImagePositionPatient"):
        load_dicom_series(tmp_path / "p")


def test_uneven_duplicate_and_off_line_slices_are_refused(tmp_path):
    with pytest.raises(InputDataError, match="uneven slice spacing: steps from 1.25 to 202.5 mm"):
        load_dicom_series(CT2_UNEVEN)  # pydicom's CT2: three slices 1.25 mm apart and one 200 mm away
    copy_series(tmp_path / "u", [(0, 0, 0), (0, 0, 5), (0, 0, 10.2)])
    with pytest.raises(InputDataError, match="uneven"):
        load_dicom_series(tmp_path / "u")
    assert load_dicom_series(tmp_path / "u", spacing_tolerance=0.05).data.shape[2] == 3
    copy_series(tmp_path / "d", [(0, 0, 0), (0, 0, 0), (0, 0, 5)])
    with pytest.raises(InputDataError, match="same position"):
        load_dicom_series(tmp_path / "d")
    copy_series(tmp_path / "o", [(0, 0, 0), (3, 0, 5), (0, 0, 10)])
    with pytest.raises(InputDataError, match="off the line"):
        load_dicom_series(tmp_path / "o")


def test_mixed_orientations_and_sizes_are_refused(tmp_path):
    with pytest.raises(InputDataError, match="differ in orientation"):
        load_dicom_series(CT2N_TWO_ORIENTATIONS)  # pydicom's CT2N: a sagittal and a coronal localiser
    files = copy_series(tmp_path / "s", [(0, 0, 0), (0, 0, 5)])
    ds = pydicom.dcmread(files[1])
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.save_as(files[1])
    with pytest.raises(InputDataError, match="differ in PixelSpacing"):
        load_dicom_series(tmp_path / "s")


def test_missing_pydicom_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'diffrecon\[data\]'"):
        load_dicom_series(CT5N)
    with pytest.raises(MissingDependencyError, match=r"diffrecon\[data\]"):
        save_dicom_series(tmp_path / "x", np.zeros((4, 4, 2)), np.eye(4))


# --- the writer -------------------------------------------------------------------------------------

def test_nifti_to_series_and_back_keeps_data_and_affine(tmp_path):
    rng = np.random.default_rng(1)
    affine = oblique_affine()
    src = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((12, 10, 5)).astype(np.float32) * 300 - 100, affine), src)
    vol = load_volume(src)
    files = save_dicom_series(tmp_path / "series", vol.data, vol.affine, series_description="round trip")
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(1, 6)]
    back = load_dicom_series(tmp_path / "series")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    np.testing.assert_allclose(back.data.numpy(), vol.data.numpy(), atol=1e-4 * 400)  # int16 quantisation
    assert np.abs(back.data.numpy() - vol.data.numpy()).max() <= 0.5 * 400 / 65535 + 1e-6
    # integer HU-like values go through exactly with slope 1
    hu = np.round(vol.data.numpy())
    save_dicom_series(tmp_path / "hu", hu, vol.affine)
    np.testing.assert_array_equal(load_dicom_series(tmp_path / "hu").data.numpy(), hu)
    # every file is a valid explicit-VR little-endian CT image with its own UIDs
    seen = set()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID and ds.SOPInstanceUID not in seen
        seen.add(ds.SOPInstanceUID)
        assert ds.Modality == "CT" and ds.SeriesDescription == "round trip" and ds.InstanceNumber == k + 1
        assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.shape == (10, 12)  # rows, columns
        assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 1)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        lps = FLIP @ vol.affine
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:3, 3] + k * lps[:3, 2],
                                   atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing],
                                   np.linalg.norm(lps[:3, :2], axis=0)[::-1], rtol=1e-6)
        np.testing.assert_allclose(float(ds.SliceThickness), 2.0, rtol=1e-6)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID):
            assert pydicom.uid.UID(uid).is_valid
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def test_a_left_handed_voxel_frame_comes_back_with_its_slices_reversed(tmp_path):
    affine = oblique_affine(handed=-1.0)
    data = np.random.default_rng(2).integers(-1000, 1000, (8, 6, 4)).astype(np.float32)
    save_dicom_series(tmp_path / "s", data, affine)
    back = load_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(back.data.numpy(), data[:, :, ::-1])
    np.testing.assert_allclose(world(back.affine, data.shape), world(affine, data.shape)[:, :, ::-1],
                               atol=1e-4)


def test_writer_refuses_bad_input_and_never_clobbers(tmp_path):
    good = np.zeros((4, 4, 2))
    with pytest.raises(InputDataError, match="3-D volume"):
        save_dicom_series(tmp_path / "a", np.zeros((4, 4)), np.eye(4))
    with pytest.raises(InputDataError, match="finite"):
        save_dicom_series(tmp_path / "a", np.full((4, 4, 2), np.nan), np.eye(4))
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    with pytest.raises(InputDataError, match="orthogonal"):
        save_dicom_series(tmp_path / "a", good, sheared)
    with pytest.raises(InputDataError, match="do not fit int16"):
        save_dicom_series(tmp_path / "a", np.full((4, 4, 2), 1e6), np.eye(4), rescale=(1.0, 0.0))
    assert not (tmp_path / "a").exists()
    save_dicom_series(tmp_path / "a", good, np.eye(4))
    with pytest.raises(OutputExistsError, match="non-empty folder"):
        save_dicom_series(tmp_path / "a", good + 1, np.eye(4))
    save_dicom_series(tmp_path / "a", good + 1, np.eye(4), overwrite=True)
    assert load_dicom_series(tmp_path / "a").data.min() == 1
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="did not make .*notes.txt"):
        save_dicom_series(tmp_path / "a", good, np.eye(4), overwrite=True)
    assert (tmp_path / "a" / "notes.txt").exists() and len(list((tmp_path / "a").glob("*.dcm"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


# --- a user's DICOM series through the command line ---------------------------------------------------

def test_dicom_series_through_simulate_and_reconstruct_keeps_its_header(tmp_path, capsys):
    from diffrecon.datasets.phantoms import shepp_logan_3d

    # a 128×128 int16 CT series, 5 slices, oblique near-sagittal planes (not RAS), stored as HU with
    # rescale intercept -1024
    hu = np.round(shepp_logan_3d((5, 128, 128)).numpy().transpose(2, 1, 0) * 1000.0 - 1000.0)
    affine = oblique_affine((0.8, 0.8, 3.0), angles=(5.0, 80.0, 10.0))
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    series = tmp_path / "series"
    save_dicom_series(series, hu, affine, rescale=(1.0, -1024.0))
    assert pydicom.dcmread(series / "IM0001.dcm").pixel_array.shape == (128, 128)
    sino, out = tmp_path / "sino.npz", tmp_path / "fbp.nii.gz"
    assert main(["simulate", str(series), str(sino), "--views", "8"]) == 0
    assert main(["reconstruct", str(sino), str(out), "--method", "fbp"]) == 0
    # the NIfTI conversion of the series, as nibabel reads it
    conv_path = tmp_path / "conv.nii.gz"
    save_nifti(conv_path, *load_dicom_series(series))
    conv, rec = nib.load(conv_path), nib.load(out)
    assert rec.shape == conv.shape == (128, 128, 5)
    np.testing.assert_array_equal(rec.affine, conv.affine)
    from test_nifti_headers import header_differences

    assert header_differences(conv.header, rec.header, skip=("descrip",)) == []
    assert rec.header["descrip"].tobytes().rstrip(b"\0") == b"diffrecon reconstruct fbp"
    assert (int(rec.header["qform_code"]), int(rec.header["sform_code"])) == (1, 1)
    assert rec.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(rec.affine, affine, atol=1e-4)  # the affine the series was written with
    # and the oracle: MONAI's reader of the series places the voxels at the same points
    from monai.data import PydicomReader

    reader = PydicomReader()
    data, meta = reader.get_data(reader.read(str(series)))
    theirs = world(np.asarray(meta["affine"], dtype=np.float64), data.shape)
    ours = world(rec.affine, rec.shape)
    if not np.allclose(ours[0, 0, 0], theirs[0, 0, 0], atol=1e-3):
        theirs = theirs[:, :, ::-1]  # MONAI stacked the slices the other way round
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    # the series and its NIfTI conversion give the very same sinogram and reconstruction
    np.testing.assert_array_equal(np.asarray(conv.dataobj), hu)
    sino2, out2 = tmp_path / "sino2.npz", tmp_path / "fbp2.nii.gz"
    assert main(["simulate", str(conv_path), str(sino2), "--views", "8"]) == 0
    assert main(["reconstruct", str(sino2), str(out2), "--method", "fbp"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out2).dataobj), np.asarray(rec.dataobj))
    assert header_differences(nib.load(out2).header, rec.header) == []
