"""Montages: orientation (superior up on coronal/sagittal panels, anterior up on axial panels of RAS volumes),
panels drawn to scale from the voxel spacing or affine, colour bars, atomic non-clobbering writes."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from diffrecon.errors import InputDataError
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


# ------------------------------------------------------------------ to scale, colour bar, atomic writes
def _images(fig):
    """(title of the column's first panel, AxesImage) of every panel, in figure order."""
    out = []
    for ax in fig.axes:
        for im in ax.get_images():
            out.append((ax, im))
    return out


def _pixel_mm(im):
    """Height and width in mm of one pixel of a panel image: its extent over its array shape."""
    x0, x1, y0, y1 = im.get_extent()
    rows, cols = im.get_array().shape
    return abs(y0 - y1) / rows, abs(x1 - x0) / cols


def test_panels_are_drawn_to_scale_for_anisotropic_spacing():
    """Issue 18 item 7: a thin slab (4 slices of 3 mm, 0.5 x 1 mm pixels) is not squashed: every panel's
    extent is its physical size, on equal-aspect axes, so the drawn aspect ratio is the spacing ratio."""
    from diffrecon.viz import montage_figure

    spacing = (0.5, 1.0, 3.0)
    v = np.random.default_rng(0).random((16, 12, 4), dtype=np.float32)
    fig = montage_figure({"x": v}, spacing=spacing, superior_axis=None)
    panels = _images(fig)
    assert [ax.get_title() for ax, _ in panels] == ["axial", "coronal", "sagittal"]
    # slices along axis a, shown as stored: rows along the lower remaining axis, columns the other
    expected = {0: (1.0, 3.0), 1: (0.5, 3.0), 2: (0.5, 1.0)}
    for axis, (ax, im) in enumerate(panels):
        assert _pixel_mm(im) == pytest.approx(expected[axis])
        assert ax.get_aspect() == 1.0  # equal: one mm is as long across as it is down
        x0, x1, y0, y1 = im.get_extent()
        rows, cols = im.get_array().shape
        ratio = cols * expected[axis][1] / (rows * expected[axis][0])
        assert abs(x1 - x0) / abs(y0 - y1) == pytest.approx(ratio)


def test_affine_orients_to_ras_and_gives_the_spacing():
    """A volume stored (S, L→R flipped, A) with 3 × 0.8 × 1.2 mm voxels: drawn as RAS, superior up on the
    coronal and sagittal panels, anterior up on the axial one, pixel sizes from the affine's columns."""
    from diffrecon.viz import montage_figure, spacing_from_affine

    n = (6, 10, 8)
    affine = np.zeros((4, 4))
    affine[2, 0] = 3.0   # array axis 0 → superior, 3 mm
    affine[0, 1] = -0.8  # axis 1 → left (x decreasing), 0.8 mm
    affine[1, 2] = 1.2   # axis 2 → anterior, 1.2 mm
    affine[3, 3] = 1.0
    assert spacing_from_affine(affine) == pytest.approx((3.0, 0.8, 1.2))
    v = np.zeros(n, np.float32)
    v[-1] += 2.0          # the superior-most slice
    v[:, :, -1] += 1.0    # the anterior-most slice
    v[:, 0] += 4.0        # the right-most slice (array axis 1 runs right → left)
    fig = montage_figure({"x": v}, affine=affine)
    panels = {ax.get_title(): im for ax, im in _images(fig)}
    assert set(panels) == {"axial", "coronal", "sagittal"}
    ax_img = np.asarray(panels["axial"].get_array())
    assert ax_img.shape == (8, 10)  # rows: posterior–anterior, columns: left–right
    assert ax_img[0].min() >= 1.0 and ax_img[-1, :-1].max() == 0.0  # anterior at the top
    assert ax_img[:, -1].min() >= 4.0 and ax_img[:, 0].max() < 4.0  # subject's right on the right
    coronal = np.asarray(panels["coronal"].get_array())  # rows S → I, columns L → R
    assert coronal.shape == (6, 10)
    assert coronal[0].min() >= 2.0 and coronal[-1, :-1].max() < 2.0 and coronal[:, -1].min() >= 4.0
    sagittal = np.asarray(panels["sagittal"].get_array())  # rows S → I, columns P → A
    assert sagittal.shape == (6, 8)
    assert sagittal[0].min() >= 2.0 and sagittal[-1].max() < 2.0
    assert sagittal[1:, -1].min() == 1.0 and sagittal[1:, 0].max() == 0.0
    assert _pixel_mm(panels["axial"]) == pytest.approx((1.2, 0.8))
    assert _pixel_mm(panels["coronal"]) == pytest.approx((3.0, 0.8))
    assert _pixel_mm(panels["sagittal"]) == pytest.approx((3.0, 1.2))
    # direction letters on the panel edges
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"L", "R", "A", "P", "S", "I"} <= texts


def test_given_slice_indices_refer_to_the_stored_array():
    from diffrecon.viz import montage_figure

    affine = np.diag([1.0, 1.0, -2.0, 1.0])  # axis 2 runs superior → inferior
    v = np.broadcast_to(np.arange(5, dtype=np.float32), (6, 7, 5)).copy()  # value = stored slice index
    fig = montage_figure({"x": v}, affine=affine, slices={"axial": 1})
    axial = next(im for ax, im in _images(fig) if ax.get_title() == "axial")
    assert np.all(np.asarray(axial.get_array()) == 1.0)
    with pytest.raises(InputDataError, match="outside"):
        montage_figure({"x": v}, affine=affine, slices={"axial": 5})
    with pytest.raises(InputDataError, match="no plane"):
        montage_figure({"x": v}, slices={"oblique": 0})


def test_colour_bars_are_labelled_with_the_range():
    from diffrecon.viz import montage_figure

    v = _ras_marker_volume()
    fig = montage_figure({"truth": v, "noisy": v + 0.1}, reference="truth", spacing=(1, 1, 2),
                         value_label="attenuation (1/mm)")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # values, |error|
    labels = [b.get_ylabel() for b in bars]
    assert labels[0] == "attenuation (1/mm)\n0 to 3"
    assert labels[1] == "|attenuation (1/mm) − truth|\n0 to 0.75"
    fig1 = montage_figure({"x": v})
    assert len([ax for ax in fig1.axes if ax.get_label() == "<colorbar>"]) == 1


def test_montage_is_atomic_and_never_replaced_without_overwrite(tmp_path, monkeypatch):
    import matplotlib.figure

    from diffrecon.errors import OutputExistsError

    v = _ras_marker_volume()
    out = tmp_path / "m.png"
    assert save_montage(out, {"x": v}, spacing=(1, 1, 3)) == out
    first = out.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError, match="overwrite"):
        save_montage(out, {"x": v + 1})
    assert out.read_bytes() == first
    save_montage(out, {"x": v + 1}, overwrite=True)
    assert out.read_bytes() != first

    def broken(self, *args, **kwargs):
        pathlib.Path(args[0]).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_montage(tmp_path / "new.png", {"x": v})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # no partial file, no temporary file


def test_bad_montage_inputs_are_refused():
    from diffrecon.viz import montage_figure

    with pytest.raises(InputDataError, match="one shape"):
        montage_figure({"a": np.zeros((4, 4, 4)), "b": np.zeros((4, 4, 3))})
    with pytest.raises(InputDataError, match="3-D"):
        montage_figure({"a": np.zeros((4, 4))})
    with pytest.raises(InputDataError, match="spacing"):
        montage_figure({"a": np.zeros((4, 4, 4))}, spacing=(1, 0, 1))
    with pytest.raises(InputDataError, match="singular"):
        montage_figure({"a": np.zeros((4, 4, 4))}, affine=np.zeros((4, 4)))
    with pytest.raises(InputDataError, match="reference"):
        montage_figure({"a": np.zeros((4, 4, 4))}, reference="truth")
