"""Montage orientation: superior up on coronal/sagittal panels, anterior up on axial panels of RAS volumes."""

from __future__ import annotations

import numpy as np

from diffrecon.viz import _central, save_montage


def _ras_marker_volume(n: int = 9) -> np.ndarray:
    """A RAS volume (axis 0 L→R, 1 P→A, 2 I→S) that is bright only in its anterior-superior corner region."""
    v = np.zeros((n, n, n), np.float32)
    v[:, n - 2:, :] += 1.0  # anterior slab
    v[:, :, n - 2:] += 2.0  # superior slab
    return v


def test_axial_panels_put_anterior_up_and_others_superior_up():
    v = _ras_marker_volume()
    axial = _central(v, 2, superior_axis=2, anterior_axis=1)
    assert axial[0].mean() == 1.0 and axial[-1].mean() == 0.0  # first row = anterior
    coronal = _central(v, 1, superior_axis=2, anterior_axis=1)
    sagittal = _central(v, 0, superior_axis=2, anterior_axis=1)
    for panel in (coronal, sagittal):
        assert panel[0].min() >= 2.0 and panel[-1].max() < 2.0  # first row = superior
    # without anterior_axis the axial slice is shown as stored
    np.testing.assert_array_equal(_central(v, 2, superior_axis=2), v[:, :, 4])


def test_montage_writes_png(tmp_path):
    v = _ras_marker_volume()
    out = tmp_path / "m.png"
    save_montage(out, {"truth": v, "noisy": v + 0.1}, reference="truth", planes={"axial": 2, "coronal": 1},
                 superior_axis=2, anterior_axis=1)
    assert out.stat().st_size > 1000
