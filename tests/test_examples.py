"""Every script in examples/ runs (on a tiny size) and writes its figure."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ct_classical_example_runs(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "ct_sparse_view_classical.py"),
                    "--out", str(tmp_path), "--size", "16"], check=True, cwd=ROOT)
    assert (tmp_path / "ct_classical.png").stat().st_size > 1000


@pytest.mark.slow
def test_mri_cs_brain_example_runs(tmp_path):
    fig = tmp_path / "mri.png"
    subprocess.run([sys.executable, str(ROOT / "examples" / "mri_cs_brain.py"), "--quick",
                    "--figure", str(fig), "--json", str(tmp_path / "mri.json")], check=True, cwd=ROOT)
    assert fig.stat().st_size > 1000 and (tmp_path / "mri.json").exists()


@pytest.mark.slow
def test_hsi_example_runs(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples" / "hsi_restoration.py"), "--out", str(tmp_path),
                    "--size", "16", "20", "6", "--quick"], check=True, cwd=ROOT)
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


@pytest.mark.slow
def test_dicom_series_example_runs(tmp_path):
    """A 128² A-P-flipped int16 DICOM series through simulate and reconstruct --method dds, no options."""
    import json

    subprocess.run([sys.executable, str(ROOT / "examples" / "dicom_series_dds.py"), "--out", str(tmp_path),
                    "--steps", "2", "--slices", "8"], check=True, cwd=ROOT)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["header_fields_differ"] == [] and summary["affine_equal"]
    assert set(summary) >= {"auto_framed_128", "preframed_64_upsampled_128"}
    assert (tmp_path / "r128.png").exists() and (tmp_path / "r128.nii.gz").exists()
