"""``diffrecon hsi restore``: restore a hyperspectral cube with DDS2M (or a classical baseline).

Input: NetCDF / MATLAB ``.mat`` / ENVI cube (dims y, x, band). Output: NetCDF with the restored
``cube``, the degraded ``input`` (and the ``mask`` for inpainting), plus a JSON run record and a PNG
with false-colour composites of input and output and spectra at a few pixels.

The JSON record holds the command's settings (task, method, value range, input, torch threads),
``seconds_total``, ``peak_rss_mb`` and ``output`` (the written file); for ``--method dds2m`` also
``"solver"``: the solver's :class:`~diffrecon.recon.diffusion.records.SolveRecord` as a dict
(``method``, ``nfe``, ``seconds``, ``steps``, ``seed``, ``settings`` and DDS2M's ``extra``: R used and
its rule, σ, network, timings, which estimate was written, …), as the diffusion commands write it.
"""

from __future__ import annotations

import pathlib

from ._common import (
    Timer,
    add_device_argument,
    dump_json,
    peak_rss_mb,
    record_path,
    require_finite,
    resolve_device,
)

TASKS = ("denoise", "inpaint", "sr")
METHODS = ("dds2m", "tv", "subspace", "interp", "bicubic")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "hsi",
        help="hyperspectral restoration (DDS2M)",
        description="Hyperspectral image restoration with DDS2M and classical baselines.",
    )
    hs = p.add_subparsers(dest="hsi_command", metavar="SUBCOMMAND")
    r = hs.add_parser(
        "restore",
        help="denoise, inpaint or super-resolve a cube",
        description="Restore a hyperspectral cube (NetCDF, .mat or ENVI; dims y, x, band) with DDS2M "
        "(self-supervised: no pretrained weights) or a baseline. The cube is assumed to lie in [0, 1] unless "
        "--value-range says otherwise; --sigma is the Gaussian noise standard deviation in the same units "
        "(estimated for denoise/sr when omitted). For inpainting, the mask comes from --mask, or NaNs in the "
        "input mark the missing voxels. For sr, INPUT is the low-resolution cube and the output is --factor "
        "times larger. Writes OUTPUT.nc (variables cube, input[, mask]), OUTPUT.json (settings, timings) and "
        "OUTPUT.png (false-colour input/output + spectra).",
    )
    r.add_argument("input", help="degraded cube: .nc, .mat or ENVI .hdr")
    r.add_argument("output", help="restored cube, NetCDF (.nc)")
    r.add_argument("--task", required=True, choices=TASKS)
    r.add_argument(
        "--method",
        default="dds2m",
        choices=METHODS,
        help="dds2m (default); tv (per-band TV, any task); subspace (FastHyDe-style, denoise); "
        "interp (linear interpolation, inpaint); bicubic (sr)",
    )
    r.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="noise standard deviation in data units (default: estimated; required for inpaint)",
    )
    r.add_argument(
        "--mask", default=None, help="inpaint: observation mask (.nc/.mat/.npy, nonzero = observed)"
    )
    r.add_argument("--factor", type=int, default=2, help="sr: upscaling factor (default 2)")
    r.add_argument("--variable", default=None, help="variable name inside a .nc/.mat input")
    r.add_argument(
        "--value-range",
        default="unit",
        help="'unit' (data already in [0, 1]), 'auto' (scale by the 0.1/99.9 percentiles) or 'LO,HI'",
    )
    r.add_argument(
        "--steps", type=int, default=None, help="DDS2M: number of diffusion steps T (task default)"
    )
    r.add_argument("--start-point", type=int, default=None, help="DDS2M: iteration where VS2M updates start")
    r.add_argument("--eta", type=float, default=None, help="DDS2M: eta (task default)")
    r.add_argument("--eta-b", type=float, default=None, help="DDS2M: eta_B (default 1)")
    r.add_argument(
        "--rank",
        type=rank_arg,
        default=None,
        help="DDS2M: rank R of VS2M, an integer (the paper uses 10) or 'auto' (default): the "
        "Marchenko-Pastur signal rank of the input for denoise/sr, the paper's 10 for inpaint; "
        "capped at bands-1",
    )
    r.add_argument(
        "--network",
        default=None,
        choices=("auto", "paper", "lite"),
        help="DDS2M: VS2M widths; auto (default) = paper on CUDA, lite on CPU",
    )
    r.add_argument(
        "--depth", type=int, default=None, help="DDS2M: hourglass levels (default: as many as fit)"
    )
    r.add_argument(
        "--upsample",
        default=None,
        choices=("bilinear", "nearest"),
        help="DDS2M: decoder upsampling of VS2M's spatial nets (paper: bilinear)",
    )
    r.add_argument("--lr", type=float, default=None, help="DDS2M: Adam learning rate (default, paper: 5e-4)")
    r.add_argument("--ema", type=float, default=0.98, help="DDS2M: EMA weight of the output (paper: 0.98)")
    r.add_argument(
        "--updates-per-step",
        type=int,
        default=1,
        help="DDS2M: Adam steps per diffusion step (paper: 1)",
    )
    r.add_argument(
        "--samples",
        type=int,
        default=None,
        help="DDS2M: average the results of this many independent chains (posterior-mean estimate; "
        "default 1 = the paper; our extension; cost grows linearly)",
    )
    r.add_argument(
        "--tuned",
        action="store_true",
        help="DDS2M denoise: the settings checked on held-out cubes (lite, R=5 or auto below 10 bands, "
        "lr 5e-3, nearest upsampling, eta_B 0.5, 4 chains) instead of the paper's; options given "
        "explicitly still win",
    )
    r.add_argument("--seed", type=int, default=1234)
    r.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)",
    )
    r.add_argument("--no-png", action="store_true", help="skip the PNG figure")
    add_device_argument(r)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    r.set_defaults(func=run_restore)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


UNTUNED_DEFAULTS = {"rank": "auto", "network": "auto", "lr": 5e-4, "samples": 1}
"""What the CLI's DDS2M uses for options left unset without ``--tuned`` (paper values, but R = auto)."""


def rank_arg(value: str):
    """``--rank``: 'auto' or a positive integer."""
    import argparse

    if value.strip().lower() == "auto":
        return "auto"
    try:
        r = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', found {value!r}") from None
    if r < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, found {r}")
    return r


def _value_range(spec: str, data):
    import numpy as np

    from ..errors import InputDataError

    if spec == "unit":
        # noisy [0, 1] data strays a little outside it; data in other units would be clipped to nothing
        finite = data[np.isfinite(data)]
        if finite.size:
            lo, hi = (float(v) for v in np.percentile(finite, [0.1, 99.9]))
            if lo < -0.5 or hi > 1.5:
                raise InputDataError(
                    f"--value-range unit: the input spans [{lo:.4g}, {hi:.4g}] (0.1/99.9 percentiles), not "
                    "[0, 1]; pass --value-range auto or LO,HI (e.g. 0,10000 for reflectance x 10^4)"
                )
        return 0.0, 1.0
    if spec == "auto":
        finite = data[np.isfinite(data)]
        lo, hi = np.percentile(finite, [0.1, 99.9])
        if hi <= lo:
            raise InputDataError("--value-range auto: the input is constant; cannot scale it")
        return float(lo), float(hi)
    try:
        lo, hi = (float(v) for v in spec.split(","))
    except ValueError as exc:
        raise InputDataError(f"--value-range: expected unit, auto or LO,HI; found {spec!r}") from exc
    if not hi > lo:
        raise InputDataError(f"--value-range: need HI > LO, found {spec!r}")
    return lo, hi


def save_figure(path, inp, out, wavelengths, overwrite: bool = False, title: str = "") -> None:
    """PNG: false-colour composites of input and output and spectra at 4 pixels (input vs output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..io.atomic import atomic_path

    def rgb(c):
        b = c.shape[-1]
        idx = [int(round(f * (b - 1))) for f in (0.85, 0.5, 0.15)] if b >= 3 else [0] * 3
        img = np.nan_to_num(c[..., idx].astype(np.float64))
        lo, hi = np.percentile(img, [1, 99])
        return np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1), idx

    h, w, b = out.shape
    pix = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    wl = np.asarray(wavelengths, dtype=float)
    xs = wl if np.all(np.isfinite(wl)) else np.arange(b)
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.2))
    a, idx = rgb(inp)
    ax[0].imshow(a, interpolation="nearest")
    ax[0].set_title(f"input (bands {idx})")
    o, _ = rgb(out)
    ax[1].imshow(o, interpolation="nearest")
    ax[1].set_title("output")
    sy, sx = inp.shape[0] / h, inp.shape[1] / w
    colors = ["C0", "C1", "C2", "C3"]
    for (py, px), col in zip(pix, colors, strict=False):
        ax[1].plot(px, py, "o", mfc="none", mec=col, ms=9, mew=2)
        ax[0].plot(px * sx, py * sy, "o", mfc="none", mec=col, ms=9, mew=2)
        ax[2].plot(
            xs,
            inp[min(int(py * sy), inp.shape[0] - 1), min(int(px * sx), inp.shape[1] - 1)],
            ":",
            color=col,
            alpha=0.7,
        )
        ax[2].plot(xs, out[py, px], "-", color=col)
    ax[2].set_xlabel("wavelength (nm)" if xs is wl else "band")
    ax[2].set_ylabel("value")
    ax[2].set_title("spectra: input (dotted) vs output (solid)")
    for a_ in ax[:2]:
        a_.set_xticks([])
        a_.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, overwrite, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_restore(args) -> int:
    import numpy as np
    import torch

    from ..errors import InputDataError
    from ..io.atomic import check_writable, write_text_atomic
    from ..io.hsi import cube_to_tensor, load_cube, load_mask, make_cube, save_cube
    from ..operators.hsi import Denoising, Inpainting, SpatialSR, check_sigma

    if args.tuned and (args.method != "dds2m" or args.task != "denoise"):
        raise InputDataError("--tuned is for --method dds2m --task denoise (not measured for inpaint or sr)")

    out_path = pathlib.Path(args.output)
    png_path = out_path.with_suffix(".png")
    rec_path = record_path(out_path)
    for p in [out_path, rec_path] + ([] if args.no_png else [png_path]):
        check_writable(p, args.overwrite)
    device = resolve_device(args.device)
    if args.task == "sr" and args.factor < 1:
        raise InputDataError(f"--factor: expected an upscaling factor >= 1, found {args.factor}")
    if args.threads is not None:
        if args.threads < 1:
            raise InputDataError(f"--threads must be >= 1, found {args.threads}")
        torch.set_num_threads(args.threads)
    da = load_cube(args.input, variable=args.variable)
    raw = da.values.astype(np.float64)
    nan = np.isnan(raw)
    if nan.any() and args.task != "inpaint":
        raise InputDataError(
            f"{args.input}: {int(nan.sum())} NaN values; only --task inpaint treats NaN as missing"
        )
    lo, hi = _value_range(args.value_range, raw)
    scaled = (raw - lo) / (hi - lo)
    sigma = None if args.sigma is None else float(check_sigma(args.sigma, "--sigma")) / (hi - lo)

    y = cube_to_tensor(np.nan_to_num(scaled), device=device)
    mask = None
    if args.task == "denoise":
        op = Denoising(tuple(y.shape))
    elif args.task == "inpaint":
        if args.mask is not None:
            mask = load_mask(args.mask, shape=tuple(y.shape)).to(device)
            if nan.any():
                mask = mask & torch.as_tensor(~nan, device=device)
        elif nan.any():
            mask = torch.as_tensor(~nan, device=device)
        else:
            raise InputDataError(
                "--task inpaint needs --mask, or NaNs in the input marking the missing voxels"
            )
        op = Inpainting(mask)
        y = y * mask
        if sigma is None and args.method in ("dds2m", "tv"):
            raise InputDataError(
                "--task inpaint needs --sigma (the noise level of the observed voxels; "
                "it cannot be estimated from a voxel-masked cube)"
            )
    else:
        f = int(args.factor)
        op = SpatialSR((y.shape[0] * f, y.shape[1] * f, y.shape[2]), f)
    settings = {
        "task": args.task,
        "method": args.method,
        "value_range": [lo, hi],
        "input": str(args.input),
        "torch_threads": torch.get_num_threads(),
    }
    solver_record = None
    with Timer() as t:
        if args.method == "dds2m":
            from ..recon.dds2m import DDS2M

            # options left unset (None) fall back to the tuned settings or to UNTUNED_DEFAULTS
            given = dict(
                num_steps=args.steps,
                start_point=args.start_point,
                eta=args.eta,
                eta_b=args.eta_b,
                rank=args.rank,
                network=args.network,
                depth=args.depth,
                upsample=args.upsample,
                lr=args.lr,
                ema=args.ema,
                updates_per_step=args.updates_per_step,
                samples=args.samples,
                seed=args.seed,
                progress=not args.quiet,
            )
            given = {k: v for k, v in given.items() if v is not None}
            if args.tuned:
                model = DDS2M.tuned_denoiser(int(y.shape[-1]), **given)
            else:
                model = DDS2M(args.task, **{**UNTUNED_DEFAULTS, **given})
            x, solver_record = model.restore(y, op, sigma=sigma)
        else:
            from ..recon import hsi_baselines as hb

            if args.method == "tv":
                x = hb.tv_restore(y, op, sigma=sigma)
            elif args.method == "subspace":
                if args.task != "denoise":
                    raise InputDataError("--method subspace is a denoiser; use it with --task denoise")
                x = hb.subspace_denoise(y, sigma=sigma)
            elif args.method == "interp":
                if args.task != "inpaint":
                    raise InputDataError("--method interp is for --task inpaint")
                x = hb.interpolate_missing(y, mask)
            else:
                if args.task != "sr":
                    raise InputDataError("--method bicubic is for --task sr")
                x = hb.upsample_bicubic(y, op.in_shape[:2])
    x_data = x.detach().cpu().double().numpy() * (hi - lo) + lo
    wl = da.coords["wavelength"].values
    attrs = {k: v for k, v in da.attrs.items()}
    attrs.update(
        {
            "restored_by": f"diffrecon hsi restore --task {args.task} --method {args.method}",
            "semi_synthetic": da.attrs.get("semi_synthetic", "unknown"),
        }
    )
    require_finite(x_data, "the restored cube")
    out_da = make_cube(x_data.astype(np.float32), wavelengths=wl, name="cube", attrs=attrs)
    extra = {"input": make_cube(raw.astype(np.float32), wavelengths=wl)}
    if mask is not None:
        extra["mask"] = mask.cpu().numpy().astype(np.int8)
    save_cube(
        out_path,
        out_da,
        overwrite=args.overwrite,
        extra=extra
        if args.task != "sr"
        else {"input_lowres": extra["input"].rename({"y": "y_low", "x": "x_low"})},
    )
    record = {
        **settings,
        **({"solver": solver_record.to_dict()} if solver_record is not None else {}),
        "seconds_total": t.seconds,
        "peak_rss_mb": peak_rss_mb(),
        "output": str(out_path),
    }
    write_text_atomic(rec_path, dump_json(record), overwrite=args.overwrite)
    if not args.no_png:
        inp_show = np.where(nan, np.nan, raw) if args.task == "inpaint" else raw
        if mask is not None:
            inp_show = np.where(mask.cpu().numpy(), raw, np.nan)
        save_figure(
            png_path,
            inp_show,
            x_data,
            wl,
            overwrite=args.overwrite,
            title=f"{args.method} {args.task}: {pathlib.Path(args.input).name}",
        )
    print(
        f"wrote {out_path} ({x_data.shape[0]}x{x_data.shape[1]}x{x_data.shape[2]}), {rec_path}"
        + ("" if args.no_png else f", {png_path}")
        + f" in {t.seconds:.1f} s"
    )
    return 0
