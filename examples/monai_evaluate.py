"""Evaluate a diffusion reconstruction over a list of NIfTI volumes with MONAI.

Pipeline: ``LoadImaged`` → ``EnsureChannelFirstd`` → ``Orientationd("RAS")`` → ``ScaleIntensityd`` →
``Resized`` (in-plane size of the prior) → ``SimulateSparseViewCTd`` (8-view CT of the axial slices)
→ MONAI ``SupervisedEvaluator`` with :class:`~diffrecon.monai.DiffusionReconstructionInferer` (DDS),
PSNR and SSIM metrics, and ``SaveImaged`` writing each reconstruction with its source's affine.

    python examples/monai_evaluate.py --prior head-64 --out results vol1.nii.gz vol2.nii.gz

Without files, two small phantoms are written to ``OUT/inputs`` and used. ``--prior untrained`` runs the
pipeline with a tiny random-weight network (mechanics only, used by the test suite).

SSIM is computed per axial slice (2-D SSIM, Gaussian window of 11 pixels, or the largest odd size that
fits the slice) and averaged over all slices of all volumes, so slabs of any thickness work: MONAI's
3-D SSIM needs at least as many slices as its window (11) and fails on thinner slabs. PSNR is computed
over whole volumes.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch


def tiny_untrained_prior(size: int):
    """A random-weight MONAI UNet prior: exercises the pipeline, reconstructs nothing useful."""
    from monai.networks.nets import DiffusionModelUNet

    from diffrecon.priors.prior import DiffusionPrior
    from diffrecon.priors.schedule import VPSchedule

    torch.manual_seed(0)
    net = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    )
    return DiffusionPrior(net, VPSchedule.linear(), image_shape=(1, size, size))


def write_phantoms(folder: pathlib.Path, size: int, n: int = 2) -> list[str]:
    import nibabel as nib

    from diffrecon.datasets.phantoms import shepp_logan_3d

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        vol = shepp_logan_3d((size, size, size)).numpy() * (0.8 + 0.2 * i)
        p = folder / f"phantom{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine=torch.eye(4).numpy() * [1.5, 1.5, 1.5, 1]), p)
        paths.append(str(p))
    return paths


def ssim_window(height: int, width: int, window: int = 11) -> int:
    """The SSIM window for slices of ``height`` x ``width``: ``window``, or the largest odd size <= both."""
    w = min(window, height, width)
    return w if w % 2 else max(w - 1, 1)


def axial_slices(output):
    """``from_engine(["pred", "label"])`` output (lists of channel-first ``(C, H, W, D)`` volumes) as
    lists of the ``(C, H, W)`` axial slices, for a 2-D metric."""
    pred, label = output
    return ([p[..., k] for p in pred for k in range(p.shape[-1])],
            [t[..., k] for t in label for k in range(t.shape[-1])])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="NIfTI volumes (default: two phantoms)")
    ap.add_argument("--prior", default="head-64", help="bundled prior name, or 'untrained'")
    ap.add_argument("--out", default="monai_eval")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50, help="DDS steps (paper: 50)")
    ap.add_argument("--size", type=int, default=64, help="in-plane size when --prior untrained")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.handlers import IgniteMetricHandler, PeakSignalToNoiseRatio, from_engine
    from monai.metrics import SSIMMetric
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        Resized,
        SaveImaged,
        ScaleIntensityd,
    )

    from diffrecon.monai import DiffusionReconstructionInferer, SimulateSparseViewCTd
    from diffrecon.recon import DDS

    out = pathlib.Path(args.out)
    if args.prior == "untrained":
        prior = tiny_untrained_prior(args.size)
    else:
        from diffrecon.priors import load

        prior = load(args.prior)
    size = prior.image_shape[-1]
    files = args.files or write_phantoms(out / "inputs", size)
    device = torch.device(args.device)

    sim = SimulateSparseViewCTd(keys="label", output_key="image", n_views=args.views, slice_axis=2)
    transforms = Compose(
        [
            LoadImaged(keys="label"),
            EnsureChannelFirstd(keys="label"),
            Orientationd(keys="label", axcodes="RAS"),
            ScaleIntensityd(keys="label", minv=0.0, maxv=1.0),
            Resized(keys="label", spatial_size=(size, size, -1)),
            sim,
        ]
    )
    loader = DataLoader(Dataset([{"label": f} for f in files], transforms), batch_size=1)
    inferer = DiffusionReconstructionInferer(
        lambda p: DDS.paper_ct(p, n_views=args.views, steps=args.steps, progress=False), sim.spec
    )
    save = SaveImaged(
        keys="pred", output_dir=str(out), output_postfix="dds", separate_folder=False, resample=False
    )
    pairs = from_engine(["pred", "label"])
    window = ssim_window(size, size)
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=loader,
        network=prior.to(device),
        inferer=inferer,
        postprocessing=save,
        key_val_metric={"psnr": PeakSignalToNoiseRatio(max_val=1.0, output_transform=pairs)},
        additional_metrics={
            "ssim": IgniteMetricHandler(
                SSIMMetric(spatial_dims=2, data_range=1.0, win_size=window),
                output_transform=lambda out: axial_slices(pairs(out)),
            )
        },
    )
    evaluator.run()
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps({"files": files, "metrics": metrics, "records": inferer.records}, indent=2)
    )
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
