"""Build the bundled held-out sample volume ``diffrecon/datasets/data/colin27_t1_64.nii.gz``.

Source: Colin27 single-subject T1 (``ch2.nii.gz``, 1 mm, 181×217×181, uint8) from the Debian package
``mricron-data`` (``apt-get install -y mricron-data``; file ``/usr/share/mricron/templates/ch2.nii.gz``).
Processing: :func:`diffrecon.datasets.framing.frame_head` with size 64 (crop to head, pad to a cube,
anti-aliased trilinear resampling, 99.9th-percentile scaling to [0, 1]). The result is stored as
uint8-free float32 NIfTI (gzip) with the framed affine. This volume is never used for training.

Usage: .venv/bin/python scripts/make_sample_volume.py [--src PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import pathlib

import nibabel as nib
import numpy as np

from diffrecon.datasets.framing import frame_head

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default="/usr/share/mricron/templates/ch2.nii.gz")
    p.add_argument("--out", default=str(ROOT / "diffrecon/datasets/data/colin27_t1_64.nii.gz"))
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    img = nib.as_closest_canonical(nib.load(a.src))
    vol, aff = frame_head(np.asarray(img.dataobj, dtype=np.float32), img.affine, size=a.size)
    out = nib.Nifti1Image(vol.astype(np.float32), aff)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = b"Colin27 T1 (mricron-data ch2) framed 64^3, [0,1]"
    nib.save(out, a.out)
    print(
        f"wrote {a.out}: shape {vol.shape}, spacing {np.sqrt((aff[:3, :3] ** 2).sum(0)).round(3)} mm, "
        f"range [{vol.min():.3f}, {vol.max():.3f}]"
    )


if __name__ == "__main__":
    main()
