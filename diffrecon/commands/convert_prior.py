"""``diffrecon convert-prior IN OUT``: convert a prior to diffrecon's format (``OUT.safetensors`` +
``OUT.json``).

IN is any form ``--prior`` accepts: a bundled name, a diffrecon checkpoint, a local diffusers folder
(``unet/`` + ``scheduler/``, optional ``vae/``), or a ``.pth``/``.pt``/``.ckpt`` state dict with
``--architecture FILE.json`` (default: ``<stem>.json`` beside it). The written prior is loaded back and
checked against the input on a fixed random input before the command reports success.

Examples::

    diffrecon convert-prior my_pipeline/ priors/mine            # diffusers folder
    diffrecon convert-prior unet_ema.pth priors/mine --architecture unet.json
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert-prior",
        help="convert a diffusers folder or a .pth state dict to a diffrecon prior (safetensors + JSON)",
        description=__doc__.split("Examples")[0].strip(),
    )
    p.add_argument("input", help="bundled name, checkpoint stem, diffusers folder, or .pth/.pt/.ckpt file")
    p.add_argument("output", help="output stem: writes OUTPUT.safetensors and OUTPUT.json")
    p.add_argument("--architecture", default=None, metavar="FILE.json",
                   help="prior description of a state dict input (the layout of a diffrecon checkpoint "
                        "JSON: architecture, schedule, parameterisation, data); default <stem>.json "
                        "beside it")
    p.add_argument("--half", action="store_true", help="store floating-point weights as float16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prior at OUTPUT")
    p.set_defaults(func=run)


def _probe(prior):
    """One network call on a fixed input: the check that the written prior equals the input prior."""
    import torch

    d = getattr(prior, "diffusion", prior)
    if d.image_shape is None:
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, *d.image_shape), generator=g)
    t = d.schedule.ddim_timesteps(1) if d.schedule.discrete else torch.tensor([0.5])
    dev = next(d.parameters()).device
    with torch.no_grad():
        return d(x.to(dev), t.to(dev)).float().cpu()


def run(args) -> int:
    import errno
    import pathlib

    import torch

    from ..errors import CheckpointError
    from ..io.atomic import check_writable
    from ..priors import load, load_prior, save_prior
    from ..priors.checkpoint import _stem

    stem = _stem(args.output)
    if stem.is_dir():
        raise IsADirectoryError(errno.EISDIR, "the output is a directory; name a stem such as DIR/name",
                                str(stem))
    for ext in (".safetensors", ".json"):  # before the (possibly slow) load
        check_writable(pathlib.Path(f"{stem}{ext}"), args.overwrite)
    prior = load(args.input, architecture=args.architecture)
    before = _probe(prior)
    w, j = save_prior(prior, stem, overwrite=args.overwrite, dtype=torch.float16 if args.half else None)
    after = _probe(load_prior(stem))
    if before is not None:
        tol = 5e-2 if args.half else 1e-4
        err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
        if not err <= tol:
            raise CheckpointError(
                f"{j}: the converted prior's output differs from {args.input}'s (relative {err:.2e}); "
                "please report this with the input's architecture"
            )
    print(f"wrote {w} and {j}")
    return 0
