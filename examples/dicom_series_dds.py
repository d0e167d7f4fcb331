"""A user's own CT series, start to finish: a 128² int16 DICOM series stored A–P flipped, reconstructed
with the bundled 64² prior and no extra options.

1. Makes the series: the bundled Colin27 head upsampled ×2 in-plane (bilinear) to 128 × 128 × 64,
   flipped anterior–posterior (so the voxel axes are not RAS), stored as int16 (× 1000) with
   ``diffrecon.io.save_dicom_series``.
2. ``diffrecon simulate SERIES/ s128.npz`` (8 parallel-beam views) and ``diffrecon reconstruct s128.npz
   r128.nii.gz --method dds``: the slices are framed to the prior's 64² and orientation, the image scale is
   estimated, the result comes back on the series' own 128² grid, orientation and header.
3. The same volume given already framed, scaled and in RAS (the bundled 64³ sample volume) goes through
   the same two commands.

It prints whether the output header and affine equal those of a NIfTI conversion of the series (all
fields but ``descrip``) and the PSNR of both runs on the 128² grid (the pre-framed result upsampled the
same bilinear way) and of the pre-framed run on its own grid.

Run:  python examples/dicom_series_dds.py --out dicom_output            (50 DDS steps, a few minutes)
      python examples/dicom_series_dds.py --out /tmp/d --steps 3 --slices 16   (a quick check)
"""

import argparse
import json
import pathlib

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from diffrecon.cli import main as diffrecon
from diffrecon.datasets import sample_volume
from diffrecon.io import load_dicom_series, save_dicom_series
from diffrecon.metrics import psnr


def upsample_in_plane(volume: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) → (2X, 2Y, Z), bilinear, pixel centres kept (``align_corners=False``)."""
    t = volume.permute(2, 0, 1)[:, None]
    return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)[:, 0].permute(1, 2, 0)


def fine_affine(affine: np.ndarray) -> np.ndarray:
    """The affine of :func:`upsample_in_plane`'s grid: half the in-plane spacing, same field of view."""
    a = affine.copy()
    a[:3, 3] -= 0.25 * (affine[:3, 0] + affine[:3, 1])
    a[:3, 0] /= 2
    a[:3, 1] /= 2
    return a


def flip_axis1(volume: torch.Tensor, affine: np.ndarray):
    """Store voxel axis 1 reversed (A–P for the RAS sample volume); the physical image is unchanged."""
    n = volume.shape[1]
    a = affine.copy()
    a[:3, 3] += a[:3, 1] * (n - 1)
    a[:3, 1] *= -1
    return torch.flip(volume, dims=[1]), a


def reorder(volume: torch.Tensor, affine: np.ndarray, target_affine: np.ndarray) -> torch.Tensor:
    """The same voxels in the axis order and directions of ``target_affine`` (flips and permutations only:
    both affines must describe the same grid)."""
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.io_orientation(target_affine))
    return torch.from_numpy(np.ascontiguousarray(nib.orientations.apply_orientation(volume.numpy(), ornt)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="dicom_output")
    parser.add_argument("--steps", type=int, default=50, help="DDS steps (default 50, the paper's)")
    parser.add_argument("--slices", type=int, default=64, help="axial slices to keep (64 = all)")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    truth64, affine64 = sample_volume()  # (64, 64, 64) in [0, 1], RAS, axial slices on axis 2
    lo = (64 - args.slices) // 2
    truth64 = truth64[:, :, lo:lo + args.slices].contiguous()
    affine64 = affine64.copy()
    affine64[:3, 3] += affine64[:3, 2] * lo
    fine, fine_aff = upsample_in_plane(truth64), fine_affine(affine64)
    stored, stored_aff = flip_axis1(fine, fine_aff)
    series = out / "series"
    save_dicom_series(series, np.round(stored.numpy() * 1000).astype(np.int16), stored_aff,
                      series_description="diffrecon example, A-P flipped", overwrite=True)
    nib.save(nib.Nifti1Image(truth64.numpy(), affine64), out / "preframed64.nii.gz")
    print(f"wrote {series}: {args.slices} slices of 128x128 int16, orientation "
          f"{''.join(nib.aff2axcodes(stored_aff))} (the prior's: RAS)")

    steps = ["--steps", str(args.steps), "--quiet", "--overwrite"]
    for name, src in (("r128", series), ("r64", out / "preframed64.nii.gz")):
        sino = out / f"{name}.npz"
        assert diffrecon(["simulate", str(src), str(sino), "--overwrite"]) == 0
        rec = out / f"{name}.nii.gz"
        assert diffrecon(["reconstruct", str(sino), str(rec), "--method", "dds", *steps]) == 0

    # the output's header against a NIfTI conversion of the series (all fields but descrip)
    conv = load_dicom_series(series)
    nib.save(nib.Nifti1Image(conv.data.numpy(), conv.affine, conv.header), out / "series_as_nifti.nii.gz")
    ref = nib.load(out / "series_as_nifti.nii.gz").header
    got = nib.load(out / "r128.nii.gz")
    fields = [k for k in ref.keys() if k not in ("descrip", "datatype", "bitpix", "scl_slope", "scl_inter",
                                                 "cal_max", "cal_min", "glmax", "glmin")]
    differ = [k for k in fields if not np.array_equal(np.asarray(ref[k]), np.asarray(got.header[k]),
                                                      equal_nan=np.asarray(ref[k]).dtype.kind == "f")]
    print(f"header fields equal to the series' NIfTI conversion: {len(fields) - len(differ)}/{len(fields)}"
          + (f" (differ: {differ})" if differ else ""))
    print(f"affine equal: {np.allclose(got.affine, conv.affine, atol=1e-4)}; orientation "
          f"{''.join(nib.aff2axcodes(got.affine))}")

    # PSNR on the series' 128² grid in the voxel order the reader gives (the series' truth is what the user
    # has: the stored int16 values / 1000); the pre-framed result is upsampled and put in that order
    truth128 = conv.data / 1000.0
    r128 = torch.from_numpy(np.asarray(got.dataobj, np.float32)) / 1000.0
    r64 = torch.from_numpy(np.asarray(nib.load(out / "r64.nii.gz").dataobj, np.float32))
    r64_fine = reorder(upsample_in_plane(r64), fine_aff, conv.affine)
    assert torch.allclose(reorder(fine, fine_aff, conv.affine), truth128, atol=1e-3)
    res = {"auto_framed_128": psnr(r128, truth128, data_range=1.0),
           "preframed_64_upsampled_128": psnr(r64_fine, truth128, data_range=1.0),
           "preframed_64_own_grid": psnr(r64, truth64, data_range=1.0)}
    res["difference_db"] = res["auto_framed_128"] - res["preframed_64_upsampled_128"]
    print(json.dumps({k: round(float(v), 3) for k, v in res.items()}))
    summary = {**{k: float(v) for k, v in res.items()}, "header_fields_differ": differ,
               "affine_equal": bool(np.allclose(got.affine, conv.affine, atol=1e-4)), "steps": args.steps,
               "slices": args.slices}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
