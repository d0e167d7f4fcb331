"""k-space files: fastMRI-style HDF5 and .npz round trips, and clear errors for malformed files."""

import numpy as np
import pytest
import torch

from diffrecon.errors import FileFormatError, OutputExistsError
from diffrecon.io.kspace import load_kspace, save_kspace

h5py = pytest.importorskip("h5py")


def _data(s=2, c=3, h=8, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(s, c, h, w, generator=g, dtype=torch.complex64)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[:, ::2] = True
    maps = torch.randn(c, h, w, generator=g, dtype=torch.complex64)
    target = torch.rand(s, h, w, generator=g)
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    return k * mask, mask, maps, target, affine


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_round_trip(tmp_path, suffix):
    k, mask, maps, target, affine = _data()
    path = tmp_path / f"scan{suffix}"
    save_kspace(
        path,
        k,
        mask=mask,
        maps=maps,
        target=target,
        affine=affine,
        slice_axis=1,
        attrs={"acceleration": 2.0, "note": "sim"},
    )
    d = load_kspace(path)
    assert d.kspace.dtype == torch.complex64 and torch.equal(d.kspace, k)
    assert torch.equal(d.mask, mask) and torch.equal(d.maps, maps)
    torch.testing.assert_close(d.target, target)
    np.testing.assert_array_equal(d.affine, affine)
    assert d.slice_axis == 1 and d.attrs["acceleration"] == 2.0 and d.attrs["note"] == "sim"
    assert d.acceleration == pytest.approx(2.0)
    with pytest.raises(OutputExistsError):
        save_kspace(path, k, mask=mask)
    save_kspace(path, k, overwrite=True)  # mask inferred from the non-zero columns
    assert torch.equal(load_kspace(path).mask, mask)


def test_reads_fastmri_layout(tmp_path):
    """A file laid out like the fastMRI multi-coil release: 1-D column mask, header attributes."""
    k, mask, *_ = _data(s=3, c=4, h=12, w=8)
    path = tmp_path / "file_brain_AXT2.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k.numpy())
        f.create_dataset("mask", data=mask[0].numpy().astype(np.float32))  # (ky,)
        f.create_dataset("ismrmrd_header", data=b"<ismrmrdHeader/>")
        f.attrs["acquisition"] = "AXT2"
        f.attrs["max"] = 1.5
    d = load_kspace(path)
    assert d.kspace.shape == (3, 4, 12, 8) and d.mask.shape == (12, 8) and torch.equal(d.mask, mask)
    assert d.attrs["acquisition"] == "AXT2" and d.maps is None and d.affine is None
    # single-coil fastMRI (slices, kx, ky) gets a coil axis
    with h5py.File(tmp_path / "single.h5", "w") as f:
        f.create_dataset("kspace", data=k[:, 0].numpy())
    assert load_kspace(tmp_path / "single.h5").kspace.shape == (3, 1, 12, 8)


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def test_malformed_files(tmp_path):
    k, mask, *_ = _data()
    kn = k.numpy()
    cases = [
        (_h5(tmp_path / "nok.h5", data=kn), "expected a 'kspace' dataset"),
        (_h5(tmp_path / "rank.h5", kspace=kn[0, 0]), "rank 4 .* found rank 2"),
        (_h5(tmp_path / "real.h5", kspace=np.abs(kn)), "expected complex k-space, found dtype float32"),
        (_h5(tmp_path / "pairs.h5", kspace=np.stack([kn.real, kn.imag], -1)), "real/imaginary pairs"),
        (_h5(tmp_path / "mask.h5", kspace=kn, mask=np.ones(7)), r"mask shape \(7,\) does not match k-space"),
        (_h5(tmp_path / "mask2.h5", kspace=kn, mask=np.ones((8, 9))), r"mask shape \(8, 9\)"),
        (_h5(tmp_path / "maps.h5", kspace=kn, maps=kn[0, :2]), "coil maps shape"),
    ]
    for path, msg in cases:
        with pytest.raises(FileFormatError, match=msg):
            load_kspace(path)
    np.savez(tmp_path / "nok.npz", data=kn)
    with pytest.raises(FileFormatError, match="expected a 'kspace' array"):
        load_kspace(tmp_path / "nok.npz")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FileFormatError, match="not a readable HDF5"):
        load_kspace(tmp_path / "junk.h5")
    with pytest.raises(FileFormatError, match="no such file"):
        load_kspace(tmp_path / "missing.npz")
    with pytest.raises(FileFormatError, match="expected a .h5/.hdf5"):
        load_kspace(tmp_path / "scan.mat")
