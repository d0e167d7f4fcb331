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
