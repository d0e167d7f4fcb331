"""The benchmark scripts' own logic (the measurements themselves are not tests): resumable results
and the markdown table of benchmarks/mbir_quality.py."""

from __future__ import annotations

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mbir_quality_table_orders_problems_and_methods(tmp_path):
    mq = _module("mbir_quality")
    rows = [
        {"problem": "ct-sv4", "method": "dds", "psnr": {"axial": 23.1, "coronal": 23.2, "sagittal": 22.0},
         "ssim": {"axial": 0.66, "coronal": 0.72, "sagittal": 0.68}, "nfe": 50, "seconds": 218.0},
        {"problem": "ct-sv8", "method": "admm_tv",
         "psnr": {"axial": 24.4, "coronal": 23.85, "sagittal": 23.07},
         "ssim": {"axial": 0.669, "coronal": 0.702, "sagittal": 0.685}, "nfe": 0, "seconds": 42.0},
        {"problem": "ct-sv8", "method": "baseline",
         "psnr": {"axial": 18.5, "coronal": 18.8, "sagittal": 19.3},
         "ssim": {"axial": 0.53, "coronal": 0.51, "sagittal": 0.56}, "nfe": 0, "seconds": 0.1},
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = mq.load_results(results)
    assert len(loaded) == 3
    lines = mq.table(loaded).splitlines()
    assert lines[0].startswith("| problem | method |")
    body = lines[2:]
    assert [b.split("|")[1].strip() for b in body] == ["ct-sv8", "ct-sv8", "ct-sv4"]
    assert "FBP / zero-filled" in body[0] and "ADMM-TV" in body[1]
    assert "24.40 / 23.85 / 23.07" in body[1]
    assert mq.load_results(tmp_path / "missing.jsonl") == []
