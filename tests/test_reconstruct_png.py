"""``diffrecon reconstruct`` writes a PNG montage beside its output (issue 18 item 7): ``OUT.png`` by
default, ``--png PATH``, ``--no-png``; refused before any work like the output; listed in the record."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from diffrecon.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sinogram(tmp_path_factory):
    """A 4-slice slab (3 mm slices, 2 mm pixels) of a 16 x 16 phantom, simulated with 6 views."""
    from diffrecon.datasets.phantoms import shepp_logan_3d

    d = tmp_path_factory.mktemp("png")
    vol = shepp_logan_3d((4, 16, 16)).numpy().transpose(1, 2, 0)  # (x, y, z): RAS, slices last
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), d / "vol.nii.gz")
    assert main(["simulate", str(d / "vol.nii.gz"), str(d / "sino.npz"), "--views", "6"]) == 0
    return d / "sino.npz"


def _fbp(sinogram, out, *extra):
    return main(["reconstruct", str(sinogram), str(out), "--method", "fbp", *extra])


def test_default_png_beside_the_output_and_in_the_record(sinogram, tmp_path, capsys):
    out = tmp_path / "recon.nii.gz"
    assert _fbp(sinogram, out) == 0
    png = tmp_path / "recon.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "recon.json").read_text())
    assert record["png"] == str(png)
    assert f"wrote {out} and {png}" in capsys.readouterr().out
    # .nii works the same way
    assert _fbp(sinogram, tmp_path / "plain.nii") == 0
    assert (tmp_path / "plain.png").exists()


def test_png_option_no_png_and_overwrite(sinogram, tmp_path):
    out = tmp_path / "a.nii.gz"
    chosen = tmp_path / "figures" / "new" / "a_montage.png"  # missing folders are created, as for OUTPUT
    assert _fbp(sinogram, out, "--png", str(chosen)) == 0
    assert chosen.exists() and not (tmp_path / "a.png").exists()
    assert json.loads((tmp_path / "a.json").read_text())["png"] == str(chosen)
    first = chosen.read_bytes()
    assert _fbp(sinogram, out, "--png", str(chosen), "--overwrite", "--filter", "hann") == 0
    assert chosen.read_bytes() != first
    out_b = tmp_path / "b.nii.gz"
    assert _fbp(sinogram, out_b, "--no-png") == 0
    assert not (tmp_path / "b.png").exists()
    assert json.loads((tmp_path / "b.json").read_text())["png"] is None


def test_existing_png_is_refused_before_any_work(sinogram, tmp_path, capsys, monkeypatch):
    import diffrecon.recon.analytic as analytic

    (tmp_path / "c.png").write_bytes(b"an earlier figure")

    def no_work(*args, **kwargs):
        raise AssertionError("reconstruction started although the PNG exists")

    monkeypatch.setattr(analytic, "fbp", no_work)
    monkeypatch.setattr("diffrecon.io.load_sinogram", no_work)
    capsys.readouterr()
    assert _fbp(sinogram, tmp_path / "c.nii.gz") == 1
    err = capsys.readouterr().err
    assert err.startswith("diffrecon reconstruct: error: ") and "c.png already exists" in err
    assert "--overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]
    assert (tmp_path / "c.png").read_bytes() == b"an earlier figure"


def test_unwritable_png_folder_is_refused_before_any_work(sinogram, tmp_path, capsys, monkeypatch):
    """A read-only folder for --png (simulated through os.access, so the test also runs as root)."""
    import os

    import diffrecon.io.atomic as atomic

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access

    def access(path, mode):
        return False if str(path) == str(locked) else real(path, mode)

    monkeypatch.setattr(atomic.os, "access", access)
    capsys.readouterr()
    assert _fbp(sinogram, tmp_path / "d.nii.gz", "--png", str(locked / "sub" / "d.png")) == 1
    err = capsys.readouterr().err
    assert "not writable" in err and str(locked) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"] and not list(locked.iterdir())


def test_failed_reconstruction_writes_no_png(sinogram, tmp_path, capsys, monkeypatch):
    import torch

    import diffrecon.recon.analytic as analytic

    monkeypatch.setattr(analytic, "fbp", lambda sino, op, **kw: torch.full((4, 16, 16), float("nan")))
    assert _fbp(sinogram, tmp_path / "e.nii.gz") == 1
    assert "non-finite" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_write_montage_orientation_sources(tmp_path, monkeypatch):
    """With a real affine the montage is oriented by it; an identity affine (a sinogram that stored none)
    with another slice axis is shown with the axial panel along the slice axis."""
    import diffrecon.viz as viz
    from diffrecon.commands._common import png_path, write_montage

    seen = {}
    monkeypatch.setattr(viz, "save_montage", lambda path, vols, **kw: seen.update(path=path, **kw))
    args = argparse.Namespace(output=str(tmp_path / "x.nii.gz"), png=None, no_png=False, method="fbp",
                              overwrite=False)
    vol = np.zeros((4, 5, 6), np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    assert write_montage(args, vol, affine, slice_axis=2) == tmp_path / "x.png" == png_path(args)
    np.testing.assert_array_equal(seen["affine"], affine)
    seen.clear()
    write_montage(args, vol, np.eye(4), slice_axis=0)
    assert "affine" not in seen and seen["planes"] == {"axial": 0, "coronal": 1, "sagittal": 2}
    assert seen["superior_axis"] == 0
    args.no_png = True
    assert write_montage(args, vol, affine, 2) is None and png_path(args) is None


def test_kspace_reconstructions_write_the_montage_too(tmp_path, capsys):
    vol = np.random.default_rng(0).random((8, 8, 2)).astype(np.float32) + 0.2
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    assert main(["simulate", str(tmp_path / "v.nii.gz"), str(tmp_path / "k.npz"), "--modality", "mri",
                 "--coils", "2"]) == 0
    capsys.readouterr()
    fig = tmp_path / "z_fig.png"
    assert main(["reconstruct", str(tmp_path / "k.npz"), str(tmp_path / "z.nii.gz"), "--method", "zerofill",
                 "--png", str(fig)]) == 0
    assert fig.stat().st_size > 0 and capsys.readouterr().err == ""
    assert json.loads((tmp_path / "z.json").read_text())["png"] == str(fig)
    # an existing montage is refused before any work without --overwrite
    assert main(["reconstruct", str(tmp_path / "k.npz"), str(tmp_path / "z2.nii.gz"), "--method", "zerofill",
                 "--png", str(fig)]) == 1
    assert not (tmp_path / "z2.nii.gz").exists()
    assert main(["reconstruct", str(tmp_path / "k.npz"), str(tmp_path / "z3.nii.gz"), "--method",
                 "zerofill"]) == 0
    assert (tmp_path / "z3.png").exists()

