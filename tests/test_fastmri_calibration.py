"""ESPIRiT calibration derived from the sampling mask (issue 18 item 6): fully sampled width, calibration
box, kernel-width rule, their errors, and ``diffrecon reconstruct`` on a fastMRI-style 64² HDF5 file with
``--maps espirit`` and no extra flags."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.errors import InputDataError
from diffrecon.metrics import psnr
from diffrecon.operators.coils import (
    MIN_CALIB_WIDTH,
    absorb_image_phase,
    auto_calibration_width,
    auto_kernel_width,
    box_fully_sampled,
    calibration_region,
    espirit_maps,
    fully_sampled_box,
    fully_sampled_width,
)
from diffrecon.operators.sampling import equispaced1d_mask, poisson2d_mask, uniform1d_mask

h5py = pytest.importorskip("h5py")


def _lines(w: int, sampled) -> torch.Tensor:
    m = torch.zeros(w, dtype=torch.bool)
    m[list(sampled)] = True
    return m


def _reference_width(mask2d: torch.Tensor) -> int:
    """Brute force: the largest s whose centred s x s box (start n//2 - s//2) is all sampled."""
    best = 0
    for s in range(1, min(mask2d.shape) + 1):
        sl = tuple(slice(n // 2 - s // 2, n // 2 - s // 2 + s) for n in mask2d.shape)
        if bool(mask2d[sl].all()):
            best = s
    return best


# --- width from the mask ----------------------------------------------------------------------------------


def test_equispaced_lines_with_acs_give_the_centre_band():
    # 5 centre lines 30..34 around DC = 32, plus every 4th line elsewhere (28 and 36 are not adjacent)
    line = _lines(64, [*range(30, 35), *range(0, 64, 4)])
    assert fully_sampled_width(line) == 5  # (ky,) line mask
    assert fully_sampled_width(line.expand(64, 64)) == 5  # broadcast to (kx, ky)
    assert auto_calibration_width(line) == 5
    assert fully_sampled_box(line.expand(64, 64), max_width=24) == (24, 5)
    assert calibration_region(line.expand(64, 64)) == (24, 5)
    assert calibration_region(line.expand(16, 64)) == (16, 5)  # a short readout caps the kx side
    assert calibration_region(line.expand(64, 64), max_width=None) == (64, 5)
    # the library's equispaced pattern with an 8-line centre
    m = equispaced1d_mask((64, 64), 4, center_fraction=8 / 64, seed=3).mask
    assert fully_sampled_width(m) == _reference_width(m) >= 8
    assert box_fully_sampled(m, calibration_region(m))


def test_an_off_centre_band_counts_only_its_centred_part():
    # lines 28..34: centred boxes of width 6 (29..34) are sampled, width 7 (29..35) is not
    assert fully_sampled_width(_lines(64, range(28, 35))) == 6
    # DC line missing: no fully sampled centre at all
    assert fully_sampled_width(_lines(64, [30, 31, 33, 34])) == 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("center_fraction", [0.08, 0.15])
def test_random_line_masks_match_a_brute_force_reference(seed, center_fraction):
    m = uniform1d_mask((48, 64), 3, center_fraction=center_fraction, seed=seed).mask
    width = fully_sampled_width(m)
    assert width == _reference_width(m)
    assert width >= round(64 * center_fraction) - 1  # at least the centre band (odd/even centring)
    assert fully_sampled_width(m[0]) >= width  # the (ky,) form is not capped by kx


def test_two_dimensional_masks_give_the_largest_centred_square():
    m = poisson2d_mask((64, 64), 4, calib=16, seed=0).mask
    assert fully_sampled_width(m) == _reference_width(m) >= 16
    assert calibration_region(m)[0] >= 16 and calibration_region(m)[1] >= 16
    # a centred 10 x 10 box in a checkerboard: exactly 10, and the box grows no further
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    m = (yy + xx) % 2 == 0
    m[15:25, 15:25] = True
    assert fully_sampled_width(m) == 10 and calibration_region(m) == (10, 10)
    # a rectangle 12 (kx) x 8 (ky): the square is 8, the box 12 x 8
    m = torch.zeros(40, 40, dtype=torch.bool)
    m[14:26, 16:24] = True
    assert fully_sampled_width(m) == 8 and calibration_region(m) == (12, 8)


def test_per_slice_masks_use_the_locations_sampled_in_every_slice():
    a = torch.zeros(64, 64, dtype=torch.bool)
    a[:, 26:38] = True  # 12 lines
    b = torch.zeros(64, 64, dtype=torch.bool)
    b[:, 29:36] = True  # 7 lines
    assert fully_sampled_width(torch.stack([a, b])) == 7
    assert calibration_region(torch.stack([a, b, a])) == (24, 7)


def test_the_width_is_capped_at_24_by_default():
    full = torch.ones(64, 64, dtype=torch.bool)
    assert fully_sampled_width(full) == 64
    assert auto_calibration_width(full) == 24 and calibration_region(full) == (24, 24)
    assert auto_calibration_width(full, max_width=32) == 32


# --- errors -----------------------------------------------------------------------------------------------


def test_no_or_too_small_a_fully_sampled_centre_is_a_clear_error():
    with pytest.raises(InputDataError, match="no fully sampled centre.*at least 5.*--maps stored"):
        auto_calibration_width(_lines(64, [0, 8, 16, 24, 40]))
    with pytest.raises(InputDataError, match="only 3 wide.*at least 5"):
        calibration_region(_lines(64, [31, 32, 33]).expand(64, 64))
    with pytest.raises(InputDataError, match="broadcast a line mask"):
        calibration_region(_lines(64, range(28, 36)))
    assert MIN_CALIB_WIDTH == 5


# --- kernel width rule ------------------------------------------------------------------------------------


def test_kernel_width_rule():
    assert [auto_kernel_width(c) for c in (5, 7, 8, 11, 14, 16, 17, 24, 100)] == [2, 2, 3, 4, 5, 5, 6, 6, 6]
    assert auto_kernel_width((24, 5)) == (6, 2)
    for c in range(MIN_CALIB_WIDTH, 80):
        k = auto_kernel_width(c)
        assert 2 <= k <= 6 and c - k + 1 >= 2 * k  # at least 2k patch shifts
        assert k == 6 or c - (k + 1) + 1 < 2 * (k + 1)  # and the widest such kernel
    with pytest.raises(InputDataError, match="too small.*at least 5"):
        auto_kernel_width(4)
    with pytest.raises(InputDataError, match="too small"):
        auto_kernel_width((24, 3))


# --- ESPIRiT with the derived defaults ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_scan():
    """6 slices of the bundled 64³ head, 4 coils, 4x equispaced lines with a 5-line centre, 30 dB."""
    from diffrecon.datasets import SAMPLE_FILE
    from diffrecon.datasets.mri_simulation import simulate_multicoil

    vol = np.asarray(nib.load(str(SAMPLE_FILE)).dataobj, dtype=np.float32)
    sim = simulate_multicoil(
        vol[:, :, 28:34], n_coils=4, acceleration=4, mask="equispaced1d", center_fraction=0.08,
        slice_axis=2, seed=0,
    )
    assert fully_sampled_width(sim.mask) == 5
    return sim


def test_espirit_defaults_derive_calibration_and_kernel(head_scan):
    from diffrecon.recon.mri import cg_sense

    sim = head_scan
    maps = espirit_maps(sim.kspace)  # calib 24 x 5, kernel 6 x 2
    assert maps.shape == sim.kspace.shape
    assert torch.equal(maps, espirit_maps(sim.kspace, calib_width=(24, 5), kernel_width=(6, 2)))
    support = maps.abs().pow(2).sum(1)
    assert 0.5 < float((support > 0).float().mean()) < 1.0
    torch.testing.assert_close(support[support > 0], torch.ones_like(support[support > 0]), atol=1e-4, rtol=0)
    truth = sim.magnitude
    p_true = psnr(cg_sense(sim.kspace, sim.maps, sim.mask, n_iter=30, progress=False).abs(), truth, 1.0)
    p_esp = psnr(cg_sense(sim.kspace, maps, sim.mask, n_iter=30, progress=False).abs(), truth, 1.0)
    assert p_esp > p_true - 2.0, (p_esp, p_true)  # measured 21.5 vs 22.3 dB


def test_espirit_refuses_boxes_and_kernels_that_do_not_fit(head_scan):
    k = head_scan.kspace[:1]
    with pytest.raises(InputDataError, match="24x24 calibration box must be fully sampled.*centre is 5 wide"):
        espirit_maps(k, calib_width=24)
    with pytest.raises(InputDataError, match="kernel_width 6x6 does not fit the 24x5.*at most 12x3"):
        espirit_maps(k, kernel_width=6)
    with pytest.raises(InputDataError, match="kernel_width 1x1 does not fit"):
        espirit_maps(k, calib_width=5, kernel_width=1)
    with pytest.raises(InputDataError, match="backend='sigpy' takes a square"):
        espirit_maps(k, backend="sigpy")


def test_absorbed_phase_makes_the_object_real(head_scan):
    from diffrecon.recon.mri import cg_sense

    sim = head_scan  # simulated with a smooth random image phase
    maps = espirit_maps(sim.kspace)
    real_maps = absorb_image_phase(maps, sim.kspace, (24, 5))
    torch.testing.assert_close(real_maps.abs(), maps.abs())
    x = cg_sense(sim.kspace, real_maps, sim.mask, n_iter=30, progress=False)
    truth = sim.magnitude
    p_abs, p_real = psnr(x.abs(), truth, 1.0), psnr(x.real, truth, 1.0)
    assert p_real > p_abs - 1.0, (p_real, p_abs)  # the real part is the image (measured 21.9 vs 21.6 dB)
    x0 = cg_sense(sim.kspace, maps, sim.mask, n_iter=30, progress=False)
    assert psnr(x0.real, truth, 1.0) < p_real - 10  # without it the real part is not (measured 1 dB)


# --- the command line on a fastMRI-style file --------------------------------------------------------------


def _write_fastmri(path, sim, mask_line):
    """The fastMRI multi-coil layout: kspace (slices, coils, kx, ky), mask (ky,) float, header, attributes;
    no maps, no affine, no target."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=sim.kspace.numpy())
        f.create_dataset("mask", data=mask_line.numpy().astype(np.float32))
        f.create_dataset("ismrmrd_header", data=b"<ismrmrdHeader/>")
        f.create_dataset("reconstruction_rss", data=sim.magnitude.numpy())
        f.attrs["acquisition"] = "AXT1"
        f.attrs["max"] = float(sim.magnitude.max())
    return path


@pytest.fixture(scope="module")
def fastmri_file(head_scan, tmp_path_factory):
    return _write_fastmri(tmp_path_factory.mktemp("fastmri") / "file_brain_AXT1_64.h5", head_scan,
                          head_scan.mask[0])


def _psnr_of(path, sim) -> float:
    vol = torch.from_numpy(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32))
    return psnr(vol.movedim(2, 0), sim.magnitude, 1.0)  # slices along the output's axis 2


@pytest.mark.parametrize("method, extra", [("sense", []), ("admm_tv", []), ("dds", ["--steps", "10"])])
def test_reconstruct_fastmri_with_espirit_needs_no_flags(fastmri_file, head_scan, tmp_path, method, extra):
    zf = tmp_path / "zf.nii.gz"
    assert main(["reconstruct", str(fastmri_file), str(zf), "--method", "zerofill", "--quiet"]) == 0
    out = tmp_path / f"{method}.nii.gz"
    argv = ["reconstruct", str(fastmri_file), str(out), "--method", method, "--maps", "espirit", "--quiet"]
    assert main(argv + extra) == 0
    rec = json.loads(out.with_name(f"{method}.json").read_text())
    assert rec["maps"].startswith("espirit (calib 24x5, kernel 6x2")
    assert rec["calib_width"] == [24, 5] and rec["kernel_width"] == [6, 2]
    assert nib.load(str(out)).shape == (64, 64, 6)
    p, p_zf = _psnr_of(out, head_scan), _psnr_of(zf, head_scan)
    # measured: zero-filled 19.2 dB; SENSE 21.6, TV-SENSE 21.7, DDS (10 steps, head-64) 21.7
    assert p > p_zf + 1.0, (method, p, p_zf)
    if method == "dds":
        assert rec["prior"] == "head-64" and "image phase" in rec["maps"]


def test_auto_is_the_default_and_equals_the_explicit_box(fastmri_file, tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    base = ["reconstruct", str(fastmri_file)]
    assert main([*base, str(a), "--method", "sense", "--quiet"]) == 0  # --maps auto: no maps stored
    assert main([*base, str(b), "--method", "sense", "--quiet", "--maps", "espirit",
                 "--calib-width", "24x5", "--kernel-width", "6x2"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(a)).dataobj), np.asarray(nib.load(str(b)).dataobj))
    # an explicit square that the mask samples, with the kernel derived from it (the issue's --calib-width 5)
    c = tmp_path / "c.nii.gz"
    assert main([*base, str(c), "--method", "sense", "--quiet", "--maps", "espirit",
                 "--calib-width", "5"]) == 0
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["calib_width"] == [5, 5] and rec["kernel_width"] == [2, 2]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--calib-width", "24"], "--calib-width 24: the central 24x24 box is not fully sampled; the "
                                  "mask's fully sampled centre is 5 wide (64x5 as a box): use "
                                  "--calib-width 5 or less"),
        (["--calib-width", "8x8"], "fully sampled centre is 5 wide"),
        (["--calib-width", "0"], "--calib-width: expected auto, an integer N >= 1"),
        (["--calib-width", "wide"], "--calib-width: expected auto"),
        (["--kernel-width", "4"], "--kernel-width 4: ESPIRiT needs 2k-1 <= the calibration side, found a "
                                  "24x5 box; use --kernel-width 12x3 or less"),
        (["--kernel-width", "1"], "--kernel-width: expected auto, an integer N >= 2"),
        (["--calib-width", "4"], "--calib-width 4: ESPIRiT: calibration width 4 is too small"),
        (["--calib-width", "2", "--kernel-width", "2"], "the box must be at least 3 wide"),
    ],
)
def test_bad_calibration_options_are_one_line_errors(fastmri_file, tmp_path, capsys, flags, message):
    out = tmp_path / "x.nii.gz"
    argv = ["reconstruct", str(fastmri_file), str(out), "--method", "sense", "--maps", "espirit", "--quiet"]
    assert main(argv + flags) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_file_without_a_usable_centre_names_the_minimum_and_the_fix(head_scan, tmp_path, capsys):
    line = _lines(64, [31, 32, 33, *range(0, 64, 4)])  # 3 centre lines (and 28, 36 not adjacent)
    sim = head_scan
    k = sim.kspace * line.view(1, 1, 1, 64)
    path = tmp_path / "narrow.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k.numpy())
        f.create_dataset("mask", data=line.numpy().astype(np.float32))
    rc = main(["reconstruct", str(path), str(tmp_path / "x.nii.gz"), "--method", "sense", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "only 3 wide" in err and "at least 5" in err and "--maps stored" in err, err
