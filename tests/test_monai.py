"""MONAI integration: transforms, the Inferer (MetaTensor affines kept), the evaluation example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
from monai.data import MetaTensor  # noqa: E402
from test_sampler_priors import gaussian_prior, unet_prior  # noqa: E402

from diffrecon.errors import InputDataError  # noqa: E402
from diffrecon.monai import (  # noqa: E402
    DiffusionReconstructd,
    DiffusionReconstructionInferer,
    SimulateSparseViewCTd,
    SimulateUndersampledMRId,
)
from diffrecon.recon.diffusion import DDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _volume(n=8, d=3):
    affine = torch.diag(torch.tensor([1.5, 2.0, 2.5, 1.0], dtype=torch.float64))
    return MetaTensor(torch.rand(1, n, n, d), affine=affine, meta={"filename_or_obj": "vol.nii.gz"})


def test_ct_transform_inferer_keep_metadata():
    prior = gaussian_prior(8)
    item = SimulateSparseViewCTd(keys="label", output_key="image", n_views=4)({"label": _volume()})
    y = item["image"]
    assert isinstance(y, MetaTensor) and tuple(y.shape) == (1, 3, 4, 12)
    assert torch.equal(y.affine, item["label"].affine)
    sim = SimulateSparseViewCTd(n_views=4)
    batch = MetaTensor(torch.stack([y.as_tensor(), y.as_tensor()]), affine=torch.stack([y.affine, y.affine]))
    batch.is_batch = True
    inferer = DiffusionReconstructionInferer(
        lambda p: DDS(p, steps=2, lam=0.01, rho=0.5, progress=False), sim.spec
    )
    out = inferer(batch, prior)
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (2, 1, 8, 8, 3)
    assert torch.equal(out.affine, batch.affine)
    assert len(inferer.records) == 2 and inferer.records[0]["nfe"] == 2


def test_mri_transform_and_reconstructd():
    prior = gaussian_prior(8)
    sim = SimulateUndersampledMRId(keys="label", output_key="kspace", acceleration=2, n_coils=2)
    item = sim({"label": _volume()})
    assert item["kspace"].is_complex() and tuple(item["kspace"].shape) == (1, 3, 2, 8, 8)
    rec = DiffusionReconstructd("kspace", DDS(prior, steps=2, lam=0.01, rho=0.5, progress=False), sim.spec)
    out = rec(item)
    assert tuple(out["pred"].shape) == (1, 8, 8, 3) and torch.equal(out["pred"].affine, item["label"].affine)
    assert out["pred_record"]["method"] == "dds"
    # a solver factory works with prior=..., and without it the error says what to pass (it used to be
    # an AttributeError on None; issue 19 audit row 10)
    factory = lambda p: DDS(p, steps=2, lam=0.01, rho=0.5, progress=False)  # noqa: E731
    out2 = DiffusionReconstructd("kspace", factory, sim.spec, prior=prior)(item)
    assert torch.equal(out2["pred"], out["pred"])
    with pytest.raises(InputDataError, match="together with prior"):
        DiffusionReconstructd("kspace", factory, sim.spec)


def test_prior_size_mismatch_is_reported():
    sim = SimulateSparseViewCTd(n_views=4)
    y = sim({"label": _volume(8)})["image"]
    rec = DiffusionReconstructd("image", DDS(gaussian_prior(4), steps=2, progress=False), sim.spec)
    with pytest.raises(InputDataError):
        rec({"image": y})


@pytest.mark.slow
def test_monai_example_runs(tmp_path):
    pytest.importorskip("ignite")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "monai_evaluate.py"),
            "--prior",
            "untrained",
            "--size",
            "16",
            "--steps",
            "2",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
    )
    import json

    import nibabel as nib

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["metrics"]) == {"psnr", "ssim"} and len(m["records"]) == 1
    src = nib.load(tmp_path / "inputs" / "phantom0.nii.gz")
    out = nib.load(tmp_path / "phantom0_dds.nii.gz")
    assert out.shape[:3] == src.shape[:3]
    assert np.allclose(out.affine, src.affine)


def _example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("monai_evaluate", ROOT / "examples" / "monai_evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # imports ignite and runs the MONAI evaluator: ~6 s
def test_monai_example_evaluates_a_slab_thinner_than_the_ssim_window(tmp_path):
    """Issue 19 audit row 10: MONAI's 3-D SSIM (window 11) crashed on slabs under 11 slices; the example
    now averages 2-D SSIM over the axial slices, so a 6-slice slab is evaluated."""
    pytest.importorskip("ignite")
    import json

    import nibabel as nib

    ex = _example_module()
    assert ex.ssim_window(64, 64) == 11 and ex.ssim_window(8, 16) == 7 and ex.ssim_window(6, 6) == 5
    pred, label = ex.axial_slices(([torch.rand(1, 4, 5, 3)], [torch.rand(1, 4, 5, 3)]))
    assert len(pred) == len(label) == 3 and pred[0].shape == (1, 4, 5)
    slab = np.zeros((16, 16, 6), np.float32)
    slab[4:12, 4:12] = 1.0
    src = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(slab, np.diag([1.0, 1.0, 2.0, 1.0])), src)
    metrics = ex.main([str(src), "--prior", "untrained", "--size", "16", "--steps", "2", "--out",
                       str(tmp_path / "out")])
    assert set(metrics) == {"psnr", "ssim"} and all(np.isfinite(v) for v in metrics.values())
    assert -1.0 <= metrics["ssim"] <= 1.0
    assert nib.load(tmp_path / "out" / "slab_dds.nii.gz").shape[:3] == (16, 16, 6)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["files"] == [str(src)]


def test_unet_prior_through_inferer():
    prior = unet_prior(16)
    sim = SimulateSparseViewCTd(n_views=2)
    y = sim({"label": _volume(16, 2)})["image"]
    out = DiffusionReconstructionInferer(DDS(prior, steps=1, lam=0.01, rho=0.5, progress=False), sim.spec)(
        y.unsqueeze(0), prior
    )
    assert tuple(out.shape) == (1, 1, 16, 16, 2)


@pytest.mark.parametrize(
    "sim",
    [
        SimulateSparseViewCTd(n_views=4, noise=0.02, seed=1),
        SimulateSparseViewCTd(n_views=3, beam="fan", slice_axis=1),
        SimulateUndersampledMRId(acceleration=2, n_coils=2, snr_db=20.0, seed=3),
    ],
    ids=["ct", "ct-fan", "mri"],
)
def test_spec_operator_is_built_without_simulating(sim, monkeypatch):
    """ProblemSpec.operator builds the simulation's operator from the settings alone (no zero volume is
    simulated); it is the operator that produced the measurements."""
    vol = torch.rand(8, 8, 3)
    prob = sim.spec.simulate(vol)
    import diffrecon.datasets.ct_simulation as cts
    import diffrecon.datasets.mri_simulation as mrs
    import diffrecon.recon.problems as problems

    def refuse(*a, **k):
        raise AssertionError("ProblemSpec.operator must not simulate")

    for mod, name in ((cts, "simulate_ct"), (mrs, "simulate_mri"), (mrs, "simulate_multicoil"),
                      (problems, "ct_problem"), (problems, "mri_problem")):
        monkeypatch.setattr(mod, name, refuse)
    plane = tuple(s for i, s in enumerate(vol.shape) if i != sim.spec.slice_axis)
    op = sim.spec.operator(vol.shape[sim.spec.slice_axis], plane)
    assert type(op) is type(prob.operator) and op.axis == prob.operator.axis
    assert torch.equal(op(vol), prob.operator(vol))
    if sim.spec.modality == "mri":
        assert torch.equal(op.op2d.mask, prob.operator.op2d.mask)
    else:
        assert op.op2d.geometry.to_dict() == prob.operator.op2d.geometry.to_dict()
