"""Framing a volume for a slice prior (issue 18 items 3, 4, 8): the framing operator F, orientation, the
prior's recorded training conventions, ``reconstruct --resample``, ``--image-scale`` defaults and warnings,
and the MONAI replacements in :mod:`diffrecon.datasets.framing`.

The operator's dot test, autograd-vs-adjoint, float64 gradcheck and batching run in the conformance suite
(``registry_framing.py``)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as tF

from diffrecon.cli import main
from diffrecon.datasets import sample_volume
from diffrecon.datasets.framing import (
    frame_problem,
    head_bbox,
    head_conventions,
    normalise_intensity,
    plan_framing,
    prior_conventions,
)
from diffrecon.errors import InputDataError
from diffrecon.metrics import psnr
from diffrecon.operators import Framing, FramingOperator
from diffrecon.operators.framing import plane_orientation, resize_matrix, slice_first_affine

SLICES = slice(24, 40)  # 16 axial slices keep the CLI runs short


def _upsample(vol: torch.Tensor, affine: np.ndarray):
    """(X, Y, Z) volume → (2X, 2Y, Z) by bilinear interpolation, with the affine of the finer grid."""
    t = vol.permute(2, 0, 1)[:, None]
    up = tF.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)[:, 0].permute(1, 2, 0)
    a = affine.copy()
    a[:3, 3] -= 0.25 * (affine[:3, 0] + affine[:3, 1])
    a[:3, :2] /= 2
    return up.contiguous(), a


def _flip_ap(vol: np.ndarray, affine: np.ndarray):
    """The same image stored with axis 1 running A → P (a non-RAS affine, 'RPS')."""
    a = affine.copy()
    a[:3, 3] += affine[:3, 1] * (vol.shape[1] - 1)
    a[:3, 1] *= -1
    return np.ascontiguousarray(vol[:, ::-1]), a


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """The sample volume's 16 axial slices: pre-framed (64², [0, 1], RAS), 128² int16 × 1000 stored A–P
    flipped, and 64² A–P flipped; each simulated as an 8-view sinogram."""
    d = tmp_path_factory.mktemp("framing")
    vol, aff = sample_volume()
    vol = vol[:, :, SLICES].contiguous()
    aff = aff.copy()
    aff[:3, 3] += aff[:3, 2] * SLICES.start
    nib.save(nib.Nifti1Image(vol.numpy(), aff), str(d / "pre64.nii.gz"))
    up, aff128 = _upsample(vol, aff)
    flipped, aff_f = _flip_ap(np.round(up.numpy() * 1000).astype(np.int16), aff128)
    nib.save(nib.Nifti1Image(flipped, aff_f), str(d / "vol128.nii.gz"))
    flipped64, aff64_f = _flip_ap(vol.numpy(), aff)
    nib.save(nib.Nifti1Image(flipped64, aff64_f), str(d / "flip64.nii.gz"))
    for name in ("pre64", "vol128", "flip64"):
        assert main(["simulate", str(d / f"{name}.nii.gz"), str(d / f"{name}.npz"), "--views", "8"]) == 0
    return d


def _reconstruct(d, name, out, *extra, steps="3"):
    return main(["reconstruct", str(d / f"{name}.npz"), str(out), "--method", "dds", "--steps", steps,
                 "--quiet", *extra])


# ---------------------------------------------------------------------------------------- the operator
def test_resize_matrix_is_identity_exchange_and_keeps_constants():
    torch.testing.assert_close(resize_matrix(5, 5, 2.0, 1.0), torch.eye(5, dtype=torch.float64))
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(resize_matrix(5, 5, 2.0, 1.0, flip=True), eye.flip(1))
    up = resize_matrix(16, 8, 7.5, 2.0)  # x2 upsampling of a centred frame: rows sum to 1 inside
    torch.testing.assert_close(up.sum(1)[1:-1], torch.ones(14, dtype=torch.float64))
    down = resize_matrix(8, 16, 3.5, 0.5)  # x0.5: a triangle of 2 input samples, still a partition of unity
    torch.testing.assert_close(down.sum(1)[1:-1], torch.ones(6, dtype=torch.float64))
    assert (down >= 0).all() and (down > 0).sum(1).min() >= 3  # averages, not point samples (no aliasing)


def test_framing_operator_is_bilinear_upsampling_and_pure_reorientation_is_a_permutation():
    f = Framing((16, 12, 3), slice_axis=2, prior_shape=(8, 6), row_axis=0, col_axis=1,
                centre=(7.5, 5.5), step=(2.0, 2.0))
    x = torch.rand(3, 8, 6, dtype=torch.float64)
    ref = tF.interpolate(x[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
    ref = ref.permute(1, 2, 0)
    got = FramingOperator(f)(x)
    assert got.shape == (16, 12, 3)
    torch.testing.assert_close(got[1:-1, 1:-1], ref[1:-1, 1:-1])  # the borders: zero padding, not replicated
    g = Framing.reorient((4, 5, 6), slice_axis=0, row_axis=2, col_axis=1, flip=(False, True))
    G = g.operator()
    assert G.in_shape == (4, 6, 5) and not g.resized and g.transposed
    v = torch.randn(4, 5, 6)
    torch.testing.assert_close(G.adjoint(v), v.flip(1).transpose(1, 2))
    torch.testing.assert_close(G(G.adjoint(v)), v)
    assert Framing.reorient((4, 5, 6), 0, 1, 2).is_identity


def test_from_box_squares_the_box_in_mm_and_fits_the_field():
    # a 60 x 40 voxel head in a 128 x 128 plane of 1 x 2 mm voxels, 4 mm margin: 60 mm x 80 mm → 88 mm square
    f = Framing.from_box((128, 128, 5), 2, (64, 64), {0: (20, 80), 1: (30, 70)}, (1.0, 2.0, 3.0), 4.0)
    assert f.step == pytest.approx((88 / 64, 88 / 64 / 2))
    assert f.centre == pytest.approx((49.5, 49.5))
    # a head filling its field: the frame is the field (step 2 exactly, centred), not larger
    f = Framing.from_box((128, 128, 5), 2, (64, 64), {0: (1, 128), 1: (0, 126)}, (1.0, 1.0, 1.0), 4.0)
    assert f.step == (2.0, 2.0) and f.centre == (63.5, 63.5)
    # a box at the edge: the frame is shifted into the field
    f = Framing.from_box((100, 100, 2), 2, (10, 10), {0: (0, 20), 1: (40, 60)}, (1.0, 1.0, 1.0), 0.0)
    assert f.centre[0] == pytest.approx(9.5) and f.centre[1] == pytest.approx(49.5)


def test_plane_orientation_from_the_affine():
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    assert plane_orientation(ras, 2) == (0, 1, (False, False))
    flipped = ras.copy()
    flipped[1, 1] = -2.0  # axis 1 runs A → P
    assert plane_orientation(flipped, 2) == (0, 1, (False, True))
    swapped = np.array([[0, 2.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])  # axis 0 is A-P
    assert plane_orientation(swapped, 2) == (1, 0, (False, False))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM-like LPS storage
    assert plane_orientation(lps, 2) == (0, 1, (True, True))
    assert plane_orientation(lps, 2, axcodes="LPS") == (0, 1, (False, False))
    # sagittal slices (axis 0) of an RAS volume are (A, S) images, as the prior saw them
    assert plane_orientation(ras, 0) == (1, 2, (False, False))
    # slice-first storage (MRI): the affine columns follow the axes
    first = slice_first_affine(flipped, 2)
    assert plane_orientation(first, 0) == (1, 2, (False, True))
    with pytest.raises(InputDataError, match="axcodes"):
        plane_orientation(ras, 2, axcodes="XYZ")


# ---------------------------------------------------------------------------------------- conventions
def test_head64_json_records_its_training_conventions():
    from diffrecon.priors import load
    from diffrecon.priors.checkpoint import read_config
    from diffrecon.priors.registry import WEIGHTS_DIR

    data = read_config(WEIGHTS_DIR / "head-64")["data"]
    assert data["orientation"]["axcodes"] == "RAS" and data["orientation"]["slice_axes"] == [0, 1, 2]
    assert data["intensity"]["normalisation"] == "p99.9 -> 1" and data["intensity"]["range"] == [0.0, 1.0]
    assert {k: data[k] for k in ("orientation", "intensity", "framing")} == head_conventions()
    conv = prior_conventions(load("head-64"))
    assert conv == head_conventions()


def _head64_without_conventions(tmp_path):
    from diffrecon.priors.registry import WEIGHTS_DIR

    cfg = json.loads((WEIGHTS_DIR / "head-64.json").read_text())
    for key in ("orientation", "intensity", "framing"):
        cfg["data"].pop(key)
    (tmp_path / "old.json").write_text(json.dumps(cfg))
    shutil.copy(WEIGHTS_DIR / "head-64.safetensors", tmp_path / "old.safetensors")
    return tmp_path / "old"


def test_priors_without_conventions_load_and_are_given_the_data_as_stored(tmp_path):
    from diffrecon.priors import load, save_prior
    from diffrecon.priors.checkpoint import read_config

    stem = _head64_without_conventions(tmp_path)
    prior = load(stem)
    assert prior_conventions(prior) == {"orientation": None, "intensity": None, "framing": None}
    flipped = np.diag([2.0, -2.0, 3.0, 1.0])
    framing, notes = plan_framing(prior, (64, 64, 4), 2, affine=flipped)
    assert framing is None and len(notes) == 1 and "records no training orientation" in notes[0]
    assert plan_framing(prior, (64, 64, 4), 2, affine=np.eye(4)) == (None, [])  # RAS data: nothing to say
    save_prior(prior, tmp_path / "resaved")  # a round trip writes no empty fields
    assert not {"orientation", "intensity", "framing"} & set(read_config(tmp_path / "resaved")["data"])


def test_save_prior_writes_the_conventions_into_data(tmp_path):
    from diffrecon.priors import load, save_prior
    from diffrecon.priors.checkpoint import read_config

    save_prior(load("head-64"), tmp_path / "copy")
    cfg = read_config(tmp_path / "copy")
    assert {k: cfg["data"][k] for k in ("orientation", "intensity", "framing")} == head_conventions()
    assert not [k for k in cfg if k.startswith("data_")]  # never duplicated at the top level


def test_train_prior_records_orientation_and_intensity(tmp_path):
    from diffrecon.priors.checkpoint import read_config

    d = tmp_path / "vols"
    d.mkdir()
    zz, yy, xx = np.mgrid[:12, :14, :10]
    v = np.exp(-(((xx - 5) / 4) ** 2 + ((yy - 7) / 5) ** 2 + ((zz - 6) / 4) ** 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(d / "v.nii.gz"))
    assert main(["train-prior", "--data", str(d), "--out", str(tmp_path / "run"), "--image-size", "8",
                 "--channels", "8", "8", "--norm-groups", "4", "--head-channels", "8", "--steps", "1",
                 "--batch-size", "2", "--timesteps", "10", "--axes", "0", "2", "--percentiles", "1", "99",
                 "--export", str(tmp_path / "mine"), "--no-progress"]) == 0
    data = read_config(tmp_path / "mine")["data"]
    assert data["orientation"]["axcodes"] == "RAS" and data["orientation"]["slice_axes"] == [0, 2]
    assert data["intensity"]["percentile"] == 99.0 and data["intensity"]["lower_percentile"] == 1.0
    assert data["intensity"]["range"] == [0.0, 1.0] and "margin_voxels" in data["framing"]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["config"]["data_intensity"]["percentile"] == 99.0  # a resumed run keeps them


# ---------------------------------------------------------------------------------------- planning
def test_frame_problem_weights_the_data_term_for_the_prior_resolution():
    from diffrecon.datasets.ct_simulation import ct_volume_operator, make_geometry
    from diffrecon.priors import load
    from diffrecon.recon.analytic import fbp

    vol, aff = sample_volume()
    up, aff128 = _upsample(vol[:, :, 30:32].contiguous(), aff)
    geom = make_geometry((128, 128), n_views=8)
    A = ct_volume_operator(geom, slice_axis=2, n_slices=2)
    y = A(up)
    rough = fbp(y, geom).movedim(0, 2)
    prior = load("head-64")
    p = frame_problem(prior, y, A, rough, aff128, "ct")
    assert p.framing.in_shape == (2, 64, 64) and p.data_weight == pytest.approx(1 / 8)
    assert p.operator.in_shape == (2, 64, 64)
    x_p = vol[:, :, 30:32].permute(2, 0, 1)
    # the pre-framed volume through A o F reproduces the measurements (up to the 1-voxel border)
    rel = float((p.operator(x_p) - p.y).norm() / p.y.norm())
    assert rel < 0.02
    assert p.to_volume(x_p).shape == up.shape
    mri = frame_problem(prior, y, A, rough, aff128, "mri")
    assert mri.data_weight == pytest.approx(1 / 4)
    with pytest.raises(InputDataError, match="--resample auto"):
        frame_problem(prior, y, A, rough, aff128, "ct", resample="off")
    with pytest.raises(InputDataError, match="rough reconstruction"):
        frame_problem(prior, y, A, None, aff128, "ct")


# ---------------------------------------------------------------------------------------- the CLI
def test_a_128_int16_flipped_volume_reconstructs_on_its_own_grid(volumes, tmp_path, capsys):
    """Issue 18 acceptance (few steps; the full 50-step numbers are in the docs): no extra options."""
    d = volumes
    capsys.readouterr()
    assert _reconstruct(d, "vol128", tmp_path / "auto.nii.gz") == 0
    err = capsys.readouterr().err
    assert "framed 128x128 slices to the prior's 64x64" in err and "flipped A-P" in err, err
    assert "resolution is limited by the prior's" in err
    assert _reconstruct(d, "pre64", tmp_path / "pre.nii.gz") == 0
    assert "framed" not in capsys.readouterr().err
    src, src_aff = _load(d / "vol128.nii.gz")
    out, out_aff = _load(tmp_path / "auto.nii.gz")
    assert out.shape == src.shape and np.allclose(out_aff, src_aff)
    truth = src / 1000
    assert np.corrcoef(out.ravel() / 1000, truth.ravel())[0, 1] > 0.95
    # orientation kept: the output matches the file's A-P direction, not the prior's (a head is nearly
    # symmetric enough for a flip to correlate too, so compare the errors)
    assert psnr(out / 1000, truth, data_range=1.0) > psnr(out[:, ::-1] / 1000, truth, data_range=1.0) + 3
    rec = json.loads((tmp_path / "auto.json").read_text())
    pre_rec = json.loads((tmp_path / "pre.json").read_text())
    # auto is the default for head-64: the int16 x 1000 file gets 1000 x the pre-framed file's scale
    assert rec["image_scale"] == pytest.approx(1000 * pre_rec["image_scale"], rel=0.05)
    assert rec["image_scale_from"].startswith("auto") and pre_rec["framing"] is None
    assert rec["framing"]["flip"] == [False, True] and rec["framing"]["step"] == [2.0, 2.0]
    assert rec["framing"]["data_weight"] == pytest.approx(0.125) and rec["resample"] == "auto"
    # PSNR against the pre-framed run, both on the 128² grid (the pre-framed result upsampled the same way)
    pre, _ = _load(tmp_path / "pre.nii.gz")
    pre128 = _upsample(torch.from_numpy(pre), np.eye(4))[0].numpy()[:, ::-1]
    p_auto = psnr(out / 1000, truth, data_range=1.0)
    p_pre = psnr(pre128, truth, data_range=1.0)
    assert p_auto > p_pre - 1.0, (p_auto, p_pre)


def test_a_flipped_64_volume_is_reoriented_for_the_prior(volumes, tmp_path, capsys):
    d = volumes
    capsys.readouterr()
    assert _reconstruct(d, "flip64", tmp_path / "flip.nii.gz") == 0
    err = capsys.readouterr().err
    assert "reoriented the slices to the prior's RAS training orientation (flipped A-P)" in err, err
    assert _reconstruct(d, "pre64", tmp_path / "ras.nii.gz") == 0
    flip, flip_aff = _load(tmp_path / "flip.nii.gz")
    ras, _ = _load(tmp_path / "ras.nii.gz")
    assert np.allclose(flip_aff, _load(d / "flip64.nii.gz")[1])
    assert psnr(flip[:, ::-1], ras, data_range=1.0) > 35  # the same problem, seen through a permutation
    rec = json.loads((tmp_path / "flip.json").read_text())
    assert rec["framing"]["step"] == [1.0, 1.0] and rec["framing"]["data_weight"] == 1.0
    capsys.readouterr()
    assert _reconstruct(d, "flip64", tmp_path / "off.nii.gz", "--resample", "off") == 0
    err = capsys.readouterr().err
    assert "--resample off: the slices reach the prior as stored" in err and "flipped A-P" in err
    assert json.loads((tmp_path / "off.json").read_text())["framing"] is None


def test_resample_off_refuses_another_slice_size(volumes, tmp_path, capsys):
    capsys.readouterr()
    assert _reconstruct(volumes, "vol128", tmp_path / "x.nii.gz", "--resample", "off") == 1
    err = capsys.readouterr().err
    assert "trained on 64x64 slices but the data's slices are 128x128" in err and "--resample off" in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_an_explicit_scale_far_from_the_auto_estimate_warns(volumes, tmp_path, capsys):
    d = volumes
    capsys.readouterr()
    assert _reconstruct(d, "vol128", tmp_path / "one.nii.gz", "--image-scale", "1", steps="1") == 0
    err = capsys.readouterr().err
    assert "warning: --image-scale 1 is" in err and "the auto estimate" in err, err
    rec = json.loads((tmp_path / "one.json").read_text())
    assert rec["image_scale"] == 1.0 and rec["image_scale_from"] == "given"
    assert _reconstruct(d, "vol128", tmp_path / "k.nii.gz", "--image-scale", "900", steps="1") == 0
    assert "--image-scale" not in capsys.readouterr().err


def test_a_prior_without_recorded_intensity_keeps_scale_1(volumes, tmp_path, capsys):
    stem = _head64_without_conventions(tmp_path)
    capsys.readouterr()
    assert _reconstruct(volumes, "flip64", tmp_path / "o.nii.gz", "--prior", str(stem), steps="1") == 0
    err = capsys.readouterr().err
    assert "records no training orientation" in err and "framed" not in err and "reoriented" not in err
    rec = json.loads((tmp_path / "o.json").read_text())
    assert rec["image_scale"] == 1.0 and rec["image_scale_from"].startswith("default 1")


# ---------------------------------------------------------------------------------------- MONAI, skimage
def test_monai_box_and_intensity_equal_the_hand_written_rules_on_the_sample_volume():
    from scipy import ndimage

    vol = sample_volume()[0].numpy()
    # the hand-written box rule these replaced: smoothed mask, opened, nonzero extent
    v = ndimage.gaussian_filter(vol, 1.0)
    mask = ndimage.binary_opening(v > 0.08 * np.percentile(v, 99.9), iterations=1)
    ref = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    assert head_bbox(vol) == ref
    noisy = (3 * vol + 0.02 * np.random.default_rng(0).standard_normal(vol.shape)).astype(np.float32)
    clipped = np.clip(noisy, 0, None)
    expected = np.clip(clipped / np.percentile(clipped, 99.9), 0, 1)
    np.testing.assert_allclose(normalise_intensity(noisy), expected, atol=1e-6)
    # why not ScaleIntensityRangePercentiles: it maps the minimum to 0, which differs without a zero voxel
    from monai.transforms import ScaleIntensityRangePercentiles

    lifted = clipped + 0.1
    monai_pct = np.asarray(ScaleIntensityRangePercentiles(0, 99.9, 0, 1, clip=True)(lifted))
    assert np.abs(monai_pct - normalise_intensity(lifted)).max() > 0.02


def test_estimate_sigma_is_not_skimages():
    """diffrecon's estimate_sigma (Haar diagonal details, torch) agrees with scikit-image's (db2 wavelet,
    zeros dropped, NumPy) on white noise but is not the same estimator, so it is kept (see its docstring)."""
    from skimage.restoration import estimate_sigma as sk_sigma

    from diffrecon.operators.noise import estimate_sigma

    g = np.random.default_rng(0)
    noise = (0.1 * g.standard_normal((128, 128, 3))).astype(np.float32)
    ours = float(estimate_sigma(torch.from_numpy(noise)))
    theirs = float(sk_sigma(noise, channel_axis=-1, average_sigmas=True))
    assert ours == pytest.approx(0.1, rel=0.05) and theirs == pytest.approx(0.1, rel=0.05)
    yy, xx = np.mgrid[:128, :128] / 128.0
    textured = noise + np.sin(40 * xx * yy)[..., None].astype(np.float32)
    ours = float(estimate_sigma(torch.from_numpy(textured)))
    theirs = float(sk_sigma(textured, channel_axis=-1, average_sigmas=True))
    assert abs(ours - theirs) > 1e-3
