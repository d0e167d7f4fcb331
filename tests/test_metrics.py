import math

import numpy as np
import pytest
import torch

from diffrecon import InputDataError
from diffrecon.metrics import plane_metrics, psnr, ssim


def test_psnr_hand_computed():
    ref = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    x = ref + torch.tensor([[0.1, 0.0], [0.0, -0.1]])
    # MSE = 0.02/4 = 0.005, range 1 → 10 log10(1/0.005)
    assert psnr(x, ref) == pytest.approx(10 * math.log10(200.0))
    assert psnr(ref, ref) == math.inf


def test_ssim_identity_and_shape_check():
    g = np.random.default_rng(0)
    ref = g.random((16, 16))
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(ref + 0.2 * g.standard_normal((16, 16)), ref) < 0.9
    with pytest.raises(InputDataError, match="does not match"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))


def test_plane_metrics_skip_empty_slices_and_differ_by_plane():
    ref = torch.zeros(6, 8, 10)
    ref[1:5, 2:6, 3:8] = 1.0
    x = ref.clone()
    x[2] += 0.1  # error concentrated in one axial slice
    m = plane_metrics(x, ref)
    assert set(m["psnr"]) == {"axial", "coronal", "sagittal"}
    assert m["psnr"]["axial"] > m["psnr"]["coronal"]  # most axial slices are perfect → huge mean
    assert all(np.isfinite(v) or v == math.inf for v in m["psnr"].values())


def test_plane_metrics_skip_slices_without_object():
    """Near-empty slices (padding, air above the head) would dominate a mean of dB; they are skipped."""
    ref = torch.zeros(4, 20, 20)
    ref[:2, 5:15, 5:15] = 1.0  # two slices with an object
    ref[2, 0, 0] = 1.0  # one bright pixel: 0.25 % of the slice, below the 1 % object fraction
    ref[3] = 1e-3  # faint haze below the 5 % object level
    x = ref.clone()
    x[:2] += 0.1
    x[2:] += 0.01
    only_objects = plane_metrics(x, ref, {"axial": 0})["psnr"]["axial"]
    assert only_objects == pytest.approx(20.0, abs=1e-6)  # error 0.1 on a range of 1 in both kept slices
    everything = plane_metrics(x, ref, {"axial": 0}, min_object_fraction=0.0)["psnr"]["axial"]
    assert everything > only_objects + 5  # the near-empty slices (40 dB each) inflate the mean
