"""``diffrecon hsi restore``: end-to-end on tiny cubes (fast settings), outputs, errors."""

import json

import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.io.hsi import load_cube, make_cube, save_cube
from diffrecon.operators.noise import add_gaussian_noise

pytestmark = pytest.mark.usefixtures("one_thread")


def _noisy(tmp_path, h=20, w=16, b=5, nan_frac=0.0):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    clean = np.stack(
        [0.2 + 0.6 * (yy * (k + 1) % 1) * 0 + 0.3 * np.sin(3 * xx + k) ** 2 + 0.3 * yy for k in range(b)], -1
    )
    noisy = add_gaussian_noise(torch.tensor(clean, dtype=torch.float32), 0.05, seed=0).numpy()
    if nan_frac:
        rng = np.random.default_rng(0)
        noisy[rng.random(noisy.shape) < nan_frac] = np.nan
    path = tmp_path / "in.nc"
    save_cube(path, make_cube(noisy, wavelengths=np.linspace(450, 900, b), attrs={"semi_synthetic": 1}))
    return path


@pytest.mark.slow  # first DDS2M call imports torch._dynamo (via Adam) and matplotlib: ~10 s cold
def test_restore_denoise_dds2m_writes_nc_json_png(tmp_path, capsys):
    inp = _noisy(tmp_path)
    out = tmp_path / "out.nc"
    rc = main(
        [
            "hsi",
            "restore",
            "--task",
            "denoise",
            str(inp),
            str(out),
            "--steps",
            "8",
            "--start-point",
            "5",
            "--rank",
            "2",
            "--network",
            "lite",
            "--quiet",
            "--sigma",
            "0.05",
            "--samples",
            "2",
        ]
    )
    assert rc == 0
    d = load_cube(out)
    assert d.shape == (20, 16, 5) and np.isfinite(d.values).all()
    rec = json.loads((tmp_path / "out.json").read_text())
    solver = rec["solver"]  # the SolveRecord of the run, as the diffusion commands write it
    assert rec["method"] == "dds2m" and solver["method"] == "dds2m"
    assert rec["task"] == "denoise" and solver["settings"]["task"] == "denoise" and solver["nfe"] == 2 * 4
    assert solver["slice_evaluations"] == 8 and solver["steps"] == 8 and solver["seed"] == 1234
    assert solver["extra"]["chain_seeds"] == [1234, 1235]
    assert solver["extra"]["output"] == "mean of 2 chains' final iterates"
    assert rec["output"] == str(out)
    png = (tmp_path / "out.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # no clobbering without --overwrite
    assert main(["hsi", "restore", "--task", "denoise", str(inp), str(out), "--method", "tv"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "hsi",
                "restore",
                "--task",
                "denoise",
                str(inp),
                str(out),
                "--method",
                "subspace",
                "--overwrite",
                "--no-png",
            ]
        )
        == 0
    )
    rec = json.loads((tmp_path / "out.json").read_text())
    assert rec["method"] == "subspace" and "solver" not in rec  # baselines have no solver record


def test_restore_inpaint_nan_mask_and_sr(tmp_path):
    inp = _noisy(tmp_path, nan_frac=0.7)
    out = tmp_path / "inp.nc"
    assert (
        main(["hsi", "restore", "--task", "inpaint", str(inp), str(out), "--method", "interp", "--no-png"])
        == 0
    )
    import xarray as xr

    with xr.open_dataset(out) as ds:
        assert "mask" in ds and 0.2 < float(ds["mask"].mean()) < 0.4
    # DDS2M inpainting needs sigma
    assert main(["hsi", "restore", "--task", "inpaint", str(inp), str(tmp_path / "x.nc")]) == 1
    lr = _noisy(tmp_path / "lr" if (tmp_path / "lr").mkdir() is None else tmp_path, h=10, w=8)
    out_sr = tmp_path / "sr.nc"
    assert (
        main(["hsi", "restore", "--task", "sr", "--factor", "2", str(lr), str(out_sr), "--method", "tv"]) == 0
    )
    assert load_cube(out_sr).shape == (20, 16, 5)
    assert (tmp_path / "sr.png").exists()


def test_restore_errors(tmp_path, capsys):
    inp = _noisy(tmp_path, nan_frac=0.1)
    assert main(["hsi", "restore", "--task", "denoise", str(inp), str(tmp_path / "o.nc")]) == 1
    assert "NaN" in capsys.readouterr().err
    assert (
        main(["hsi", "restore", "--task", "denoise", str(tmp_path / "missing.nc"), str(tmp_path / "o.nc")])
        == 1
    )
    inp2 = _noisy(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    assert (
        main(["hsi", "restore", "--task", "denoise", str(inp2), str(tmp_path / "o.nc"), "--sigma", "0"]) == 1
    )
    assert "> 0" in capsys.readouterr().err
    assert (
        main(["hsi", "restore", "--task", "inpaint", str(inp2), str(tmp_path / "o.nc"), "--sigma", "0.1"])
        == 1
    )
    assert "--mask" in capsys.readouterr().err


@pytest.mark.slow  # a DDS2M run (imports torch._dynamo via Adam): a few seconds cold
def test_restore_rank_auto_recorded_and_bad_rank(tmp_path, capsys):
    inp = _noisy(tmp_path)
    out = tmp_path / "auto.nc"
    args = ["hsi", "restore", "--task", "denoise", str(inp), str(out), "--steps", "6", "--start-point", "4"]
    args += ["--network", "lite", "--quiet", "--sigma", "0.05", "--no-png"]
    assert main(args) == 0  # --rank defaults to auto
    solver = json.loads((tmp_path / "auto.json").read_text())["solver"]
    extra = solver["extra"]
    assert solver["settings"]["rank"] == "auto" and 1 <= extra["rank"] <= 4
    assert "Marchenko-Pastur" in extra["rank_rule"] and extra["network_config"]["rank"] == extra["rank"]
    assert main(args[:5] + [str(tmp_path / "r2.nc")] + args[6:] + ["--rank", "2"]) == 0
    solver2 = json.loads((tmp_path / "r2.json").read_text())["solver"]
    assert solver2["extra"]["rank"] == 2 and solver2["settings"]["rank"] == 2
    assert solver2["extra"]["rank_rule"] == "given"
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            main(args[:5] + [str(tmp_path / "bad.nc")] + args[6:] + ["--rank", bad])
        assert "--rank" in capsys.readouterr().err


@pytest.mark.slow  # a DDS2M run (imports torch._dynamo via Adam): a few seconds cold
def test_restore_tuned_settings_and_explicit_overrides(tmp_path, capsys):
    """--tuned applies TUNED_DENOISE (rank auto below 10 bands); options given explicitly win; it
    refuses tasks and methods it was not measured for."""
    inp = _noisy(tmp_path)
    out = tmp_path / "tuned.nc"
    args = ["hsi", "restore", "--task", "denoise", str(inp), str(out), "--tuned", "--steps", "6"]
    args += ["--start-point", "4", "--samples", "1", "--quiet", "--sigma", "0.05", "--no-png"]
    assert main(args) == 0
    solver = json.loads((tmp_path / "tuned.json").read_text())["solver"]
    st, extra = solver["settings"], solver["extra"]
    assert st["lr"] == 5e-3 and st["eta_b"] == 0.5 and extra["network"] == "lite"
    assert extra["network_config"]["upsample"] == "nearest" and st["rank"] == "auto"
    assert st["samples"] == 1 and solver["nfe"] == 3  # the explicit --samples 1 beats the tuned 4
    plain = tmp_path / "plain.nc"
    assert main(args[:5] + [str(plain)] + [a for a in args[6:] if a != "--tuned"]) == 0
    solver = json.loads((tmp_path / "plain.json").read_text())["solver"]
    st = solver["settings"]
    assert st["lr"] == 5e-4 and st["eta_b"] == 1.0
    assert solver["extra"]["network_config"]["upsample"] == "bilinear"
    for extra in (["--method", "tv"], ["--task", "sr"]):
        assert (
            main(["hsi", "restore", "--task", "denoise", str(inp), str(tmp_path / "x.nc"), "--tuned", *extra])
            == 1
        )
        assert "--tuned" in capsys.readouterr().err


def test_restore_refuses_data_outside_the_unit_range_instead_of_clipping(tmp_path, capsys):
    """Issue 19 audit row 2: a cube in 0..1000 with the default --value-range unit used to come back
    99.8 % clipped to 1.0 with exit 0; now it is refused with the range found and the flags that fit."""
    h, w, b = 12, 10, 4
    cube = 1000.0 * np.random.default_rng(0).random((h, w, b)).astype(np.float32)
    inp = tmp_path / "big.nc"
    save_cube(inp, make_cube(cube, wavelengths=np.linspace(450, 900, b)))
    out = tmp_path / "o.nc"
    argv = ["hsi", "restore", "--task", "denoise", str(inp), str(out), "--method", "tv", "--no-png"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "not [0, 1]" in err and "--value-range auto" in err and not out.exists()
    assert main([*argv, "--value-range", "0,1000"]) == 0
    restored = load_cube(out).values
    assert restored.max() > 100  # written back in the input's units, not clipped to 1
