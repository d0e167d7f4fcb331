"""Build the bundled full-resolution brain slab ``diffrecon/datasets/data/colin27_t1_slab.nii.gz``.

Source: Colin27 single-subject T1 (``ch2.nii.gz``, 1 mm, 181×217×181, uint8) from the Debian package
``mricron-data`` 1.2.20211006+dfsg-4 (file ``/usr/share/mricron/templates/ch2.nii.gz``; a non-root user
can unpack it with ``apt-get download mricron-data && dpkg -x mricron-data_*.deb DIR``).
Processing: none but the cut: axial slices ``FIRST … FIRST + COUNT − 1`` (array axis 2) at full
resolution, the original uint8 values, and the affine translated so that every voxel keeps its world
position. ``diffrecon.datasets.mri_simulation.brain_volume()`` loads it; the real-brain MRI test and
example use it, so they run the same on every machine.

Usage: .venv/bin/python scripts/make_brain_slab.py [--src PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import pathlib

import nibabel as nib
import numpy as np

from diffrecon.datasets.mri_simulation import BRAIN_SLAB_FIRST, BRAIN_SLAB_SLICES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default="/usr/share/mricron/templates/ch2.nii.gz")
    p.add_argument("--out", default=str(ROOT / "diffrecon/datasets/data/colin27_t1_slab.nii.gz"))
    a = p.parse_args()
    img = nib.load(a.src)
    data = np.asarray(img.dataobj)
    if data.shape != (181, 217, 181) or data.dtype != np.uint8:
        raise SystemExit(f"{a.src}: expected the 181x217x181 uint8 ch2, found {data.shape} {data.dtype}")
    first, count = BRAIN_SLAB_FIRST, BRAIN_SLAB_SLICES
    slab = np.ascontiguousarray(data[:, :, first : first + count])
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, first]) + img.affine[:3, 3]
    out = nib.Nifti1Image(slab, affine)
    out.header.set_data_dtype(np.uint8)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = f"Colin27 T1 (mricron-data ch2) axial {first}-{first + count - 1}".encode()
    nib.save(out, a.out)
    print(f"wrote {a.out}: shape {slab.shape} uint8, ch2 axial slices {first}..{first + count - 1}")


if __name__ == "__main__":
    main()
