"""Sample data, simulated acquisitions and training-data pipelines.

``sample_volume()`` returns the bundled held-out head volume (Colin27 T1, see ``NOTICE`` and
``scripts/make_sample_volume.py``); it is never used to train the bundled priors.

The one simulation per modality, :func:`~diffrecon.datasets.ct_simulation.simulate_ct` and
:func:`~diffrecon.datasets.mri_simulation.simulate_mri` (plus the acquisition helpers ``make_geometry``,
``make_mask`` and the realistic MRI acquisition ``simulate_multicoil``), resolve lazily from here;
the operator builders and benchmark problems on top of them are in :mod:`diffrecon.recon.problems`.
"""

from __future__ import annotations

import pathlib

import numpy as np

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
SAMPLE_FILE = DATA_DIR / "colin27_t1_64.nii.gz"


def sample_volume():
    """The held-out sample head volume and its affine.

    Colin27 single-subject T1 (Holmes et al. 1998; file ``ch2.nii.gz`` of Debian's ``mricron-data``),
    cropped to the head, padded to a cube and resampled to 64³ voxels of ≈ 3.47 mm, intensities scaled
    so the 99.9th percentile is 1 and clipped to [0, 1]. Array axes follow RAS (axis 0: left→right,
    axis 1: posterior→anterior, axis 2: inferior→superior); axial slices are ``volume[:, :, k]``.

    Returns:
        ``(volume, affine)``: ``torch.Tensor`` (64, 64, 64) float32 and ``np.ndarray`` (4, 4) float64
        (voxel indices → world millimetres).
    """
    import nibabel as nib
    import torch

    from ..errors import FileFormatError

    if not SAMPLE_FILE.is_file():
        raise FileFormatError(f"bundled sample volume missing: {SAMPLE_FILE} (reinstall diffrecon)")
    img = nib.load(str(SAMPLE_FILE))
    vol = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32).copy())
    return vol, np.asarray(img.affine, dtype=np.float64)


_LAZY = {
    "make_geometry": "ct_simulation",
    "ct_volume_operator": "ct_simulation",
    "simulate_ct": "ct_simulation",
    "CTSimulation": "ct_simulation",
    "make_mask": "mri_simulation",
    "simulate_mri": "mri_simulation",
    "MRISimulation": "mri_simulation",
    "simulate_multicoil": "mri_simulation",
    "SimulatedMRI": "mri_simulation",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["sample_volume", "SAMPLE_FILE", *_LAZY]
