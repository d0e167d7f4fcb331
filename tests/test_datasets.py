"""Sample volume, head framing, synthetic heads and slice banks."""

import numpy as np
import pytest
import torch

from diffrecon.datasets import sample_volume
from diffrecon.datasets.bank import build_bank, load_bank, volume_slices
from diffrecon.datasets.framing import frame_head, normalise_intensity


def test_sample_volume():
    vol, aff = sample_volume()
    assert isinstance(vol, torch.Tensor) and vol.shape == (64, 64, 64) and vol.dtype == torch.float32
    assert isinstance(aff, np.ndarray) and aff.shape == (4, 4)
    assert float(vol.min()) >= 0 and float(vol.max()) <= 1 and float(vol.max()) > 0.99
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(0))
    assert np.allclose(spacing, spacing[0]) and 3.0 < spacing[0] < 4.0
    # head fills the frame but background surrounds it
    assert 0.1 < float((vol > 0.1).float().mean()) < 0.7
    assert float(vol[0].mean()) < 0.05 and float(vol[-1].mean()) < 0.05


def _ellipsoid(shape=(60, 70, 50)):
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = [n / 2 for n in shape]
    r = ((zz - c[0]) / 20) ** 2 + ((yy - c[1]) / 28) ** 2 + ((xx - c[2]) / 15) ** 2
    return (r < 1).astype(np.float32) * 0.8


def test_frame_head_preserves_world_coordinates():
    v = _ellipsoid()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-60, -70, -50]
    out, naff = frame_head(v, aff, size=32, margin_mm=4)
    assert out.shape == (32, 32, 32) and out.max() == pytest.approx(1.0)
    # the centre of mass maps to the same world point
    com = lambda a: np.array([(np.indices(a.shape)[i] * a).sum() / a.sum() for i in range(3)])  # noqa: E731
    w_in = aff[:3, :3] @ com(v) + aff[:3, 3]
    w_out = naff[:3, :3] @ com(out) + naff[:3, 3]
    assert np.allclose(w_in, w_out, atol=2.0)
    # longest extent (y, 56 voxels · 2 mm + 8 mm margin) fills the cube
    assert naff[0, 0] == pytest.approx((56 * 2 + 8) / 32, rel=0.05)
    with pytest.raises(ValueError):
        frame_head(v, np.diag([1.0, 2.0, 1.0, 1.0]))


def test_normalise_and_slices():
    v = np.zeros((16, 16, 16), np.float32)
    v[4:12, 4:12, 4:12] = 3.0
    n = normalise_intensity(v)
    assert n.max() == 1.0 and n.min() == 0.0
    s = volume_slices(n)
    assert s.shape == (3 * 8, 16, 16)  # only the 8 non-empty slices per axis


def test_synth_head_and_bank(tmp_path):
    pytest.importorskip("nilearn")
    from diffrecon.datasets.synth import load_mni_maps, synth_head

    maps = load_mni_maps(2)
    a = synth_head(maps, np.random.default_rng(3), size=32)[0]
    b = synth_head(maps, np.random.default_rng(3), size=32)[0]
    assert a.shape == (32, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b), "same seed must give the same volume"
    assert 0 <= a.min() and a.max() <= 1 and (a > 0.1).mean() > 0.1
    out = build_bank(
        tmp_path / "bank", volumes=1, size=32, shard_volumes=1, include_real=False, log=lambda *_: None
    )
    arr = load_bank(out)
    assert arr.dtype == np.float16 and arr.shape[1:] == (32, 32) and len(arr) > 15
    assert (out / "bank.json").exists()


@pytest.mark.slow
def test_bank_is_the_same_with_parallel_workers(tmp_path):
    """Each shard has its own seeded generator, so parallel processes write the very same bank."""
    pytest.importorskip("nilearn")
    kw = dict(volumes=2, size=32, shard_volumes=1, include_real=False, log=lambda *_: None)
    serial = build_bank(tmp_path / "serial", workers=1, **kw)
    parallel = build_bank(tmp_path / "parallel", workers=2, **kw)
    for k in range(2):
        a = np.load(serial / f"shard-{k:05d}.npy")
        b = np.load(parallel / f"shard-{k:05d}.npy")
        assert np.array_equal(a, b), f"shard {k} differs"


def test_simulations_resolve_from_the_package():
    import diffrecon.datasets as ds
    from diffrecon.datasets import ct_simulation, mri_simulation

    assert ds.simulate_ct is ct_simulation.simulate_ct and ds.simulate_mri is mri_simulation.simulate_mri
    assert ds.simulate_multicoil is mri_simulation.simulate_multicoil
    assert set(ds._LAZY) <= set(ds.__all__)
    with pytest.raises(AttributeError):
        ds.no_such_name  # noqa: B018


def test_brain_volume_loads_the_source_asked_for_and_never_falls_back(monkeypatch):
    import glob

    from diffrecon.datasets.mri_simulation import BRAIN_SLAB_FIRST, BRAIN_SLAB_SLICES, brain_volume
    from diffrecon.errors import InputDataError, MissingDependencyError

    vol, affine, desc = brain_volume()
    assert vol.shape == (181, 217, BRAIN_SLAB_SLICES) and vol.dtype == np.float32
    assert 100 < vol.max() <= 255 and desc.startswith("Colin27") and "bundled" in desc  # uint8 values
    np.testing.assert_allclose(np.sqrt((affine[:3, :3] ** 2).sum(0)), 1.0)  # full 1 mm resolution
    assert BRAIN_SLAB_FIRST == 80
    # a machine without mricron-data: the full volume is refused with the reason, not swapped for MNI152
    monkeypatch.setattr(glob, "glob", lambda *a, **k: [])
    with pytest.raises(MissingDependencyError, match="mricron-data"):
        brain_volume("colin27")
    with pytest.raises(InputDataError, match="source must be one of"):
        brain_volume("colin")
