"""``diffrecon reconstruct --method dds|diffusion_mbir`` (alias ``mbir``) on CT sinograms and MRI k-space
of the held-out head volume."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from diffrecon.cli import main
from diffrecon.datasets import SAMPLE_FILE


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


@pytest.fixture(scope="module")
def sinogram(tmp_path_factory):
    path = tmp_path_factory.mktemp("ct") / "sino.npz"
    assert main(["simulate", str(SAMPLE_FILE), str(path), "--views", "8"]) == 0
    return path


def test_dds_on_a_sinogram_keeps_affine_beats_fbp_and_is_seeded(sinogram, tmp_path):
    truth, affine = _load(SAMPLE_FILE)
    out = tmp_path / "dds.nii.gz"
    args = ["reconstruct", str(sinogram), str(out), "--method", "dds", "--steps", "4", "--quiet"]
    assert main(args) == 0
    x, aff = _load(out)
    np.testing.assert_allclose(aff, affine)
    assert x.shape == truth.shape
    rec = json.loads((tmp_path / "dds.json").read_text())
    assert rec["method"] == "dds" and rec["solver"]["nfe"] == 4 and rec["prior"] == "head-64"
    assert main(["reconstruct", str(sinogram), str(tmp_path / "fbp.nii.gz"), "--method", "fbp"]) == 0
    fbp, _ = _load(tmp_path / "fbp.nii.gz")
    assert np.abs(x - truth).mean() < np.abs(fbp - truth).mean()
    # same seed → identical volume
    assert main(args[:2] + [str(tmp_path / "again.nii.gz")] + args[3:]) == 0
    np.testing.assert_array_equal(_load(tmp_path / "again.nii.gz")[0], x)


def test_mbir_resume_from_a_saved_state_gives_the_uninterrupted_result(sinogram, tmp_path):
    # the library solver below has image_scale 1; the CLI's default for head-64 is auto (issue 18 item 4)
    base = ["reconstruct", str(sinogram), "--method", "mbir", "--steps", "3", "--quiet", "--image-scale", "1"]
    full = tmp_path / "full.nii.gz"
    assert main(base[:2] + [str(full)] + base[2:]) == 0
    # an interrupted run: the state after the first step only (written with --save-every 1, then cut)
    from diffrecon.io import load_sinogram
    from diffrecon.priors import load
    from diffrecon.recon.diffusion import DiffusionMBIR

    data = load_sinogram(sinogram)
    solver = DiffusionMBIR.default_ct(load("head-64"), n_views=8, steps=3, progress=False)
    state = tmp_path / "state.pt"
    solver(data.sinogram, data.operator(), save_state=state, stop_after=1)
    resumed = tmp_path / "resumed.nii.gz"
    assert main(base[:2] + [str(resumed)] + base[2:] + ["--resume", str(state)]) == 0
    np.testing.assert_allclose(_load(resumed)[0], _load(full)[0], atol=1e-5)
    rec = json.loads((tmp_path / "resumed.json").read_text())
    # --method mbir is the alias of diffusion_mbir: the record carries the canonical name
    assert rec["method"] == "diffusion_mbir" and rec["solver"]["method"] == "diffusion_mbir"
    assert rec["solver"]["resumed_at"] == 1


def test_cli_save_state_then_resume_and_bad_state_files(sinogram, tmp_path, capsys):
    base = ["reconstruct", str(sinogram), "--method", "dds", "--steps", "3", "--quiet"]
    state = tmp_path / "dds_state.pt"
    first = tmp_path / "first.nii.gz"
    assert main(base[:2] + [str(first)] + base[2:] + ["--save-state", str(state), "--save-every", "1"]) == 0
    assert state.exists()
    again = tmp_path / "again.nii.gz"  # resuming a finished run reproduces its output without new steps
    assert main(base[:2] + [str(again)] + base[2:] + ["--resume", str(state)]) == 0
    np.testing.assert_array_equal(_load(again)[0], _load(first)[0])
    assert json.loads((tmp_path / "again.json").read_text())["solver"]["resumed_at"] == 3
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    capsys.readouterr()
    assert main(base[:2] + [str(tmp_path / "x.nii.gz")] + base[2:] + ["--resume", str(junk)]) == 1
    assert "cannot read the solver state" in capsys.readouterr().err
    # a state of another run (different step count → different settings) is refused
    assert main(base[:2] + [str(tmp_path / "y.nii.gz"), "--method", "dds", "--steps", "4", "--quiet",
                            "--resume", str(state)]) == 1
    assert "another run" in capsys.readouterr().err
    # --save-state never replaces a file without --overwrite (unless it is the file being resumed) and is
    # never the output itself (issue 19 audit, row 4)
    saved = state.read_bytes()
    assert main(base[:2] + [str(tmp_path / "z.nii.gz")] + base[2:] + ["--save-state", str(state)]) == 1
    assert "already exists" in capsys.readouterr().err and state.read_bytes() == saved
    out = tmp_path / "w.nii.gz"
    assert main(base[:2] + [str(out)] + base[2:] + ["--save-state", str(out)]) == 1
    assert "that is the output" in capsys.readouterr().err and not out.exists()
    assert main(base[:2] + [str(tmp_path / "v.nii.gz")] + base[2:]
                + ["--resume", str(state), "--save-state", str(state)]) == 0


def test_one_default_per_method_and_the_paper_one_flag_away(sinogram, tmp_path, capsys):
    """Issue 19 item 2: `reconstruct` uses the library's default_ct presets (DDS ρ × 0.1; DiffusionMBIR λ, ρ
    by the step-count rule, predictor-only with the VP head prior); --paper gives the published ones and
    refuses DiffusionMBIR below 2000 steps unless λ, ρ are given."""
    from diffrecon.priors import load
    from diffrecon.recon.diffusion import DDS, DiffusionMBIR

    prior = load("head-64")

    def settings(name):
        return json.loads((tmp_path / f"{name}.json").read_text())["solver"]

    def run(name, *extra):
        return main(["reconstruct", str(sinogram), str(tmp_path / f"{name}.nii.gz"), "--quiet", *extra])

    assert run("dds", "--method", "dds", "--steps", "1") == 0
    assert run("dds_paper", "--method", "dds", "--steps", "1", "--paper") == 0
    assert settings("dds")["settings"]["rho"] == pytest.approx(DDS.default_ct(prior, 8).rho)
    assert settings("dds_paper")["settings"]["rho"] == pytest.approx(DDS.paper_ct(prior, 8).rho)
    assert settings("dds")["settings"]["rho"] == pytest.approx(0.1 * settings("dds_paper")["settings"]["rho"])
    assert run("mbir", "--method", "mbir", "--steps", "3") == 0
    rule = DiffusionMBIR.default_ct(prior, 8, steps=3)
    got = settings("mbir")
    assert got["settings"]["lam"] == pytest.approx(rule.lam)
    assert got["settings"]["rho"] == pytest.approx(rule.rho)
    assert got["settings"]["n_corrector"] == 0 and got["nfe"] == 3
    capsys.readouterr()
    assert run("mbir_paper", "--method", "mbir", "--steps", "100", "--paper") == 1
    err = capsys.readouterr().err
    assert "--paper with --steps 100" in err and "step-count rule" in err
    assert not (tmp_path / "mbir_paper.nii.gz").exists()
    assert run("mbir_own", "--method", "mbir", "--steps", "2", "--paper", "--lam", "0.1", "--rho", "1") == 0
    assert settings("mbir_own")["settings"]["n_corrector"] == 1 and settings("mbir_own")["nfe"] == 3


def test_limited_angle_sinogram_gets_the_limited_angle_preset(tmp_path):
    """A 90° sinogram: the default is the per-slice 30-CG data step, --paper the paper's λ = 0.4 z-TV."""
    sino = tmp_path / "la.npz"
    assert main(["simulate", str(SAMPLE_FILE), str(sino), "--limited-angle", "90"]) == 0
    from diffrecon.recon.diffusion import exact_equivalent

    def settings(name, *extra):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["reconstruct", str(sino), str(out), "--method", "dds", "--steps", "1", "--quiet",
                     *extra]) == 0
        return json.loads((tmp_path / f"{name}.json").read_text())["solver"]["settings"]

    default = settings("la_dds")
    assert (default["mode"], default["cg_iter"]) == ("2d", 30) and "lam" not in default
    lam, _ = exact_equivalent(0.4, 10.0, 90)  # DDS's limited-angle λ = 0.4 (sparse view: 0.04)
    paper = settings("la_paper", "--paper")
    assert (paper["mode"], paper["cg_iter"], paper["lam"]) == ("3d", 5, pytest.approx(lam))
    own = settings("la_own", "--lam", "0.5")
    assert (own["mode"], own["cg_iter"], own["lam"]) == ("3d", 30, 0.5)


def test_dds_on_multicoil_kspace(tmp_path):
    truth, affine = _load(SAMPLE_FILE)
    k = tmp_path / "k.npz"
    assert main(["simulate", str(SAMPLE_FILE), str(k), "--modality", "mri", "--acceleration", "4",
                 "--no-phase", "--coils", "4"]) == 0
    out = tmp_path / "dds.nii.gz"
    assert main(["reconstruct", str(k), str(out), "--method", "dds", "--steps", "3", "--quiet"]) == 0
    assert main(["reconstruct", str(k), str(tmp_path / "zf.nii.gz"), "--method", "zerofill"]) == 0
    x, aff = _load(out)
    np.testing.assert_allclose(aff, affine)
    zf, _ = _load(tmp_path / "zf.nii.gz")
    assert np.abs(x - truth).mean() < np.abs(zf - truth).mean()


@pytest.mark.parametrize("bad, message", [(["--image-scale", "-1"], "image-scale"),
                                          (["--prior", "no-such-prior"], "no-such-prior"),
                                          (["--iters", "5"], "--steps")])
def test_bad_diffusion_arguments_fail_clearly(sinogram, tmp_path, capsys, bad, message):
    rc = main(["reconstruct", str(sinogram), str(tmp_path / "x.nii.gz"), "--method", "dds", "--quiet", *bad])
    assert rc == 1 and message in capsys.readouterr().err


def test_non_finite_results_are_an_error_not_a_file(sinogram, tmp_path, capsys):
    """Issue 19 audit row 6: a prior with NaN weights used to give a NaN volume written with exit 0."""
    import torch

    from diffrecon.priors import load, save_prior

    prior = load("head-64")
    with torch.no_grad():
        for p in prior.network.parameters():
            p.fill_(float("nan"))
    save_prior(prior, tmp_path / "nan-prior")
    out = tmp_path / "nan.nii.gz"
    argv = ["reconstruct", str(sinogram), str(out), "--method", "dds", "--steps", "2", "--quiet",
            "--prior", str(tmp_path / "nan-prior")]
    assert main(argv) == 1
    assert "non-finite" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "nan.json").exists()


@pytest.mark.slow
def test_sigterm_saves_the_state_and_leaves_no_temporary_file(sinogram, tmp_path):
    """Issue 19 audit row 7: SIGTERM (a scheduler's kill) is handled like Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time

    state, out = tmp_path / "run.state.pt", tmp_path / "out" / "x.nii.gz"
    out.parent.mkdir()
    cmd = [sys.executable, "-c", "import sys; from diffrecon.cli import main; sys.exit(main(sys.argv[1:]))",
           "reconstruct", str(sinogram), str(out), "--method", "dds", "--steps", "400", "--quiet",
           "--save-state", str(state), "--save-every", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "the run never wrote its first state"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no hidden temporary file left
    import torch

    blob = torch.load(state, map_location="cpu", weights_only=True)
    assert 1 <= blob["step"] < 400  # saved at the last completed step, resumable with --resume
