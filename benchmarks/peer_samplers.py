r"""deepinv 0.5.0's DiffPIR, DPS and DDRM beside diffrecon's solvers: same prior, same problems, one process.

The problems are those of ``benchmarks/mbir_quality.py`` (``ct-sv8``, ``ct-sv4``, ``ct-sv2``, ``ct-la90``,
``mri-u4`` from :mod:`diffrecon.recon.problems`, axial slices = array axis 2) on the held-out sample volume
(``--volume sample``) or on the synthetic tuning head (``--volume tuning``, for choosing weights), the whole
volume or a slab of axial slices (``--slices A B``: slices A … B−1). Every method uses the bundled
``head-64`` prior (``--prior``):

=======================  =========================================================================
``deepinv_diffpir``      ``deepinv.sampling.DiffPIR`` (L2 data fidelity, CG prox) on a ``LinearPhysics``
``deepinv_dps``          ``deepinv.sampling.DPS`` (VP SDE, DDPM solver, ``"norm"`` guidance)
``deepinv_ddrm``         ``deepinv.sampling.DDRM`` on a ``DecomposablePhysics`` built from diffrecon's
                         per-slice SVD (:func:`~diffrecon.recon.diffusion.slice_svd`)
``diffpir``              diffrecon ``DiffPIR.paper`` (2-D, per slice)
``diffpir_3d``           the same with ``mode="3d"`` (one z-TV ADMM iteration per step)
``ddrm``                 diffrecon ``DDRM.paper`` (2-D)
``ddrm_3d``              the same with ``mode="3d"``
``dps``                  diffrecon ``DPS`` (per slice)
``dds``                  ``DDS.default_ct`` (CT) / ``DDS.paper_mri`` (MRI), for reference
``diffpir_as_deepinv``   diffrecon ``DiffPIR.deepinv`` with the settings of ``deepinv_diffpir``
                         (λ = 2 × deepinv's ``lambda_``): the agreement check
``ddrm_as_deepinv``      diffrecon ``DDRM.deepinv`` with the settings of ``deepinv_ddrm``
=======================  =========================================================================

**How deepinv sees diffrecon's pieces** (classes of this script, not of the package):

* :class:`PriorDenoiser` is deepinv's denoiser call ``model(x, sigma)``: ``x`` a batch ``(B, 1, H, W)`` of
  noisy images in the prior's data units (``[0, 1]``), ``sigma`` the noise level in the same units (a number
  or one per batch element). It picks the discrete step t whose model-space noise-to-signal ratio
  :math:`\bar\sigma_t = \sqrt{1-\bar\alpha_t}/\sqrt{\bar\alpha_t}` is nearest to
  ``sigma × data_scale``, forms :math:`x_t = \sqrt{\bar\alpha_t}\,(c\,x + d)` (c, d the prior's
  ``data_scale``, ``data_shift``) and returns the prior's Tweedie estimate :math:`\mathbb E[z_0\mid x_t]`
  mapped back to data units. One call = one network evaluation of the batch; it is differentiable (DPS
  backpropagates through it).
* :func:`linear_physics`: ``deepinv.physics.LinearPhysics`` with ``A``/``A_adjoint`` = the problem's 2-D slice
  operator and its exact adjoint (CT ``(B, 1, H, W) → (B, 1, views, detectors)``; MRI → complex
  ``(B, 1, coils, H, W)``), its CG settings (``cg_iter``, ``cg_tol``) and a Gaussian noise model whose σ is
  the sampler's assumed noise level (``sigma_n``; deepinv reads it from the physics). Its outputs are made
  contiguous: deepinv draws noise with ``randn_like(A_adjoint(y))``, which follows the memory layout, and
  the CT adjoint returns a transposed view (the same numbers would land on other pixels).
* :func:`decomposable_physics`: ``deepinv.physics.DecomposablePhysics`` with V, Vᵀ and the singular values
  (``mask``) of diffrecon's dense per-slice SVD, :math:`U^\top y = V^\top A^\top y / s` on s > 0, and
  :math:`U c = A V (c/s)`.

deepinv's samplers are 2-D: the slices of the slab are deepinv's batch dimension, ``--chunk`` slices per call
(default 16; chunk k is seeded with ``seed + k`` through ``torch.manual_seed``, which is also how deepinv
draws, so a slab of ≤ ``--chunk`` slices draws exactly the numbers diffrecon's solver generator draws).

**Measured per method**: PSNR and SSIM per plane (:func:`~diffrecon.metrics.plane_metrics`; a slab thinner
than 3 slices has axial values only), wall seconds, and the NFE counted exactly: a forward hook on the
prior's network adds up the slices of every call, NFE = that sum / the slab's slice count (network calls
are stored too). DDRM's one-time SVD is computed before the clock starts and stored as ``svd_seconds``.

**Settings.** Every method's weights come from :data:`DEFAULTS`, overridden in this order: ``--steps N``
(every diffusion method), ``--settings JSON`` (inline or a file: ``{"method": {"key": value}}``) and
``--set method.key=value`` (repeatable; the value is read as JSON, else as a string). deepinv methods take
only their listed keys; diffrecon methods pass any key to the solver's constructor. Note the units:
deepinv's DiffPIR ``lambda_`` is half of diffrecon's ``lam`` (see ``docs/peers-samplers.md``).

Each finished (volume, slab, problem, method, settings, seed) is appended to ``--results`` (JSON lines)
with its volume saved next to it, so a sweep resumes where it stopped; ``--table`` prints the markdown
table and the deepinv-vs-diffrecon pairs (with several ``--seed`` values, also their means). ``--dtype
float64`` runs prior, data and operators in double precision, to tell rounding from rule differences.

    python benchmarks/peer_samplers.py --problems ct-sv8 --slices 30 32 --quick --results /tmp/peer.jsonl
    python benchmarks/peer_samplers.py --table --results /tmp/peer.jsonl
    python benchmarks/peer_samplers.py --volume tuning --methods deepinv_diffpir diffpir \
        --set deepinv_diffpir.lambda_=3.5 --set diffpir.lam=7

**Installing deepinv** (optional; the diffrecon methods run without it, and the deepinv ones are then
skipped with a message). deepinv imports torchvision, and PyPI's torchvision wheels for x86-64 Linux are
CUDA builds whose C++ operators cannot load beside the pinned CPU torch (2.13.0+cpu): ``import
torchvision`` then stops at registering a fake kernel for ``torchvision::nms``. Installed into the
project's environment, such a torchvision also breaks ``import diffusers`` (its UNets import torchvision
when it is present) and with it the diffusers adapter and its tests — so it is not an extra of the
project. Keep the peer packages in a folder of their own and put it on ``PYTHONPATH`` for this script
only (torch and everything else come from the project's environment; pip leaves torch alone)::

    PEER_DEPS=~/.cache/diffrecon-peer-deps
    .venv/bin/pip install --no-deps --target "$PEER_DEPS" deepinv==0.5.0 torchvision==0.28.0 \
        torchmetrics==1.9.0 lightning-utilities==0.15.3 natsort==8.4.0
    PYTHONPATH="$PEER_DEPS" .venv/bin/python benchmarks/peer_samplers.py --quick --slices 30 32 ...

(deepinv 0.5.0's other runtime dependencies — numpy, matplotlib, tqdm, einops, requests, h5py — are
already the project's; torchvision 0.28.0 is the release built for torch 2.13.0.) When torchvision's
import fails that way, this script declares the schemas of the two operators that torchvision's import
registers fake kernels for (``nms``, ``qnms``, with no kernel) and imports again; deepinv's samplers and
physics use none of torchvision's C++ operators. A plain ``import deepinv`` with that ``PYTHONPATH``
still fails. With a CUDA build of torch a matching torchvision imports normally (not tried here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch

from diffrecon.datasets import sample_volume
from diffrecon.metrics import plane_metrics
from diffrecon.recon.problems import build_problem

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}
PROBLEMS = ("ct-sv8", "ct-sv4", "ct-sv2", "ct-la90", "mri-u4")
METHODS = ("deepinv_diffpir", "deepinv_dps", "deepinv_ddrm", "diffpir", "diffpir_3d", "ddrm", "ddrm_3d",
           "dps", "dds", "diffpir_as_deepinv", "ddrm_as_deepinv")
LABELS = {
    "deepinv_diffpir": "DiffPIR (deepinv)", "deepinv_dps": "DPS (deepinv)", "deepinv_ddrm": "DDRM (deepinv)",
    "diffpir": "DiffPIR.paper", "diffpir_3d": "DiffPIR.paper 3-D", "ddrm": "DDRM.paper",
    "ddrm_3d": "DDRM.paper 3-D", "dps": "DPS", "dds": "DDS", "diffpir_as_deepinv": "DiffPIR.deepinv",
    "ddrm_as_deepinv": "DDRM.deepinv",
}
#: method → (deepinv method whose settings it takes) for the agreement pairs
PAIRS = {"diffpir_as_deepinv": "deepinv_diffpir", "ddrm_as_deepinv": "deepinv_ddrm"}

#: Default settings. deepinv methods: deepinv 0.5.0's defaults (DPS: 100 steps on the CPU instead of its
#: 1000); σ_n / σ_y are the levels deepinv assumes for a physics without a Gaussian noise model.
#: diffrecon methods: keyword arguments of the preset named in the module docstring.
DEFAULTS: dict[str, dict] = {
    "deepinv_diffpir": {"steps": 100, "lambda_": 7.0, "zeta": 0.1, "sigma_n": 0.05, "data_step": "cg",
                        "cg_iter": 50, "cg_tol": 1e-4, "sv_rcond": 1e-5},
    "deepinv_dps": {"steps": 100, "weight": 1.0, "solver": "ddpm", "guidance": "norm"},
    "deepinv_ddrm": {"steps": 100, "eta": 0.85, "eta_b": 1.0, "sigma_y": 0.01, "sv_rcond": 1e-5},
    "diffpir": {"steps": 100, "lam": 7.0, "zeta": 0.3, "sigma_n": 0.01},
    "diffpir_3d": {"steps": 100, "lam": 7.0, "zeta": 0.3, "sigma_n": 0.01, "mode": "3d"},
    "ddrm": {"steps": 20, "eta": 0.85, "eta_b": 1.0, "sigma_y": 0.0},
    "ddrm_3d": {"steps": 20, "eta": 0.85, "eta_b": 1.0, "sigma_y": 0.0, "mode": "3d"},
    "dps": {"steps": 100, "zeta": 1.0},
    "dds": {},
}

INSTALL_HINT = ("pip install --no-deps --target DIR deepinv==0.5.0 torchvision==0.28.0 torchmetrics==1.9.0 "
                "lightning-utilities==0.15.3 natsort==8.4.0, then PYTHONPATH=DIR (this script's docstring)")


# ------------------------------------------------------------------------------------ deepinv import
_TV_SCHEMAS = None  # keeps the torch.library.Library alive (dropping it removes the definitions)


def import_deepinv():
    """``(deepinv module, None)`` or ``(None, reason)``; imported on first use only (module docstring:
    the torchvision fallback for a CPU build of torch)."""
    global _TV_SCHEMAS
    try:
        import deepinv

        return deepinv, None
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}"
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            return None, f"RuntimeError: {e}"
    # torchvision's C++ library did not load (so no torchvision operator exists): declare the two schemas
    # its import registers fake kernels for, drop the half-imported modules and try once more
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "deepinv")]:
        del sys.modules[name]
    try:
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TV_SCHEMAS = lib
        import deepinv

        return deepinv, None
    except Exception as e:  # noqa: BLE001 - reported, and the deepinv methods are skipped
        return None, f"{type(e).__name__}: {e}"


class PriorDenoiser(torch.nn.Module):
    """deepinv's denoiser interface ``model(x, sigma)`` around a diffrecon pixel prior (module docstring).

    ``x``: ``(B, 1, H, W)`` noisy images in the prior's data units; ``sigma``: a number, a 0-d tensor or
    ``B`` values, the noise standard deviation in data units. Returns the Tweedie estimate in data units.
    """

    def __init__(self, prior):
        super().__init__()
        self.prior = prior
        self.scale = abs(float(prior.data_scale))
        sched = prior.schedule
        self.discrete = bool(getattr(sched, "discrete", False))
        if self.discrete:
            ratio = sched.noise_to_signal(torch.arange(sched.num_steps)).to(torch.float64)
            self.register_buffer("ratio", ratio, persistent=False)

    def times(self, sigma, batch: int, device) -> torch.Tensor:
        """The prior's step for each batch element: nearest model-space noise-to-signal ratio."""
        s = torch.as_tensor(sigma, dtype=torch.float64).detach().flatten().cpu()
        s = s.expand(batch) if s.numel() == 1 else s
        if self.discrete:
            t = (self.ratio.view(1, -1) - (s * self.scale).view(-1, 1)).abs().argmin(dim=1)
            return t.to(device)
        ts = [self.prior.schedule.t_from_noise_to_signal(float(v) * self.scale) for v in s]
        return torch.tensor(ts, dtype=torch.float64, device=device)

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        p = self.prior
        dtype = next(p.network.parameters()).dtype  # deepinv may hand float32 to a float64 prior
        z = x.to(dtype)
        t = self.times(sigma, x.shape[0], x.device)
        a, _ = p.alpha_sigma(t, z)
        return p.denormalise(p.x0(a * p.normalise(z), t)).to(x.dtype)


def linear_physics(dinv, op2d, sigma: float, cg_iter: int, cg_tol: float):
    """deepinv ``LinearPhysics`` of a 2-D slice operator (batch ``(B, 1, H, W)``; module docstring)."""
    # contiguous outputs: deepinv draws its noise with randn_like(A_adjoint(y)), which follows the memory
    # layout, and diffrecon's CT adjoint returns a transposed view (same numbers, another arrangement)
    return dinv.physics.LinearPhysics(
        A=lambda x: op2d(x).contiguous(), A_adjoint=lambda y: op2d.adjoint(y).contiguous(),
        noise_model=dinv.physics.GaussianNoise(sigma=float(sigma)), max_iter=int(cg_iter), tol=float(cg_tol))


def decomposable_physics(dinv, op2d, svd, sigma: float, dtype=torch.float32):
    """deepinv ``DecomposablePhysics`` with diffrecon's per-slice SVD (V, s; U never formed)."""
    s = svd.singular_values(torch.zeros((), dtype=dtype)).view(1, 1, *svd.shape)
    pos = s > 0
    s_safe = torch.where(pos, s, torch.ones_like(s))

    def u_adjoint(y):
        c = svd.vt(op2d.adjoint(y).contiguous())
        return torch.where(pos, c / s_safe, torch.zeros_like(c))

    def u(c):
        return op2d(svd.v(torch.where(pos, c / s_safe, torch.zeros_like(c)))).contiguous()

    return dinv.physics.DecomposablePhysics(
        U=u, U_adjoint=u_adjoint, V=svd.v, V_adjoint=svd.vt, mask=s,
        noise_model=dinv.physics.GaussianNoise(sigma=float(sigma)))


# ------------------------------------------------------------------------------------ counting, SVD
class NetworkCounter:
    """Counts the prior network's calls and the slices they evaluated (a forward hook)."""

    def __init__(self, prior):
        self.calls = 0
        self.items = 0
        prior.network.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.calls += 1
        self.items += int(inputs[0].shape[0])

    def reset(self):
        self.calls = self.items = 0


_SVD_SECONDS: dict[int, float] = {}


def problem_svd(op2d, rcond: float):
    """diffrecon's per-slice SVD (cached per operator by diffrecon) and the seconds its first build took."""
    from diffrecon.recon.diffusion import slice_svd

    t0 = time.perf_counter()
    svd = slice_svd(op2d, rcond=rcond)
    _SVD_SECONDS.setdefault(id(op2d), time.perf_counter() - t0)
    return svd, round(_SVD_SECONDS[id(op2d)], 1)


def needs_svd(method: str, settings: dict) -> bool:
    return "ddrm" in method or settings.get("data_step", settings.get("data_solver")) == "svd"


# ------------------------------------------------------------------------------------ settings
def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_settings(args) -> dict[str, dict]:
    """Per-method settings: :data:`DEFAULTS` ← ``--steps`` ← ``--settings`` ← ``--set``."""
    out = {m: dict(DEFAULTS.get(m, {})) for m in METHODS if m not in PAIRS}
    if args.steps is not None:
        for m in out:
            out[m]["steps"] = int(args.steps)
    extra: dict = {}
    if args.settings:
        path = pathlib.Path(args.settings)
        extra = json.loads(path.read_text() if path.suffix == ".json" and path.exists() else args.settings)
    for item in args.set or []:
        key, _, value = item.partition("=")
        method, _, name = key.partition(".")
        if not name or not _:
            raise SystemExit(f"--set expects method.key=value, found {item!r}")
        extra.setdefault(method, {})[name] = parse_value(value)
    for method, kw in extra.items():
        if method in PAIRS:
            raise SystemExit(f"{method} takes the settings of {PAIRS[method]}; set those instead")
        if method not in out:
            raise SystemExit(f"unknown method {method!r} in the settings; expected one of {sorted(out)}")
        if method.startswith("deepinv_"):
            bad = set(kw) - set(DEFAULTS[method])
            if bad:
                raise SystemExit(f"{method}: unknown settings {sorted(bad)}; it takes "
                                 f"{sorted(DEFAULTS[method])}")
        out[method].update(kw)
    return out


def pair_settings(method: str, dinv_settings: dict) -> dict:
    """diffrecon preset keywords reproducing a deepinv run (module docstring; λ = 2 × ``lambda_``)."""
    d = dinv_settings
    if method == "diffpir_as_deepinv":
        kw = {"steps": d["steps"], "lam": 2.0 * d["lambda_"], "zeta": d["zeta"], "sigma_n": d["sigma_n"],
              "data_solver": d["data_step"]}
        if d["data_step"] == "cg":
            kw["cg_iter"] = d["cg_iter"]
        return kw
    return {"steps": d["steps"], "eta": d["eta"], "eta_b": d["eta_b"], "sigma_y": d["sigma_y"],
            "sv_rcond": d["sv_rcond"]}


# ------------------------------------------------------------------------------------ methods
def run_deepinv(method: str, dinv, prob, prior, settings: dict, seed: int, chunk: int
                ) -> tuple[torch.Tensor, dict]:
    """One deepinv sampler over the slab's slices (slice-first batch, chunked); returns the volume."""
    op2d = prob.operator.op2d
    y = prob.y  # slice-first: (S, …)
    rdtype = y.real.dtype
    den = PriorDenoiser(prior)
    st = dict(settings)
    info: dict = {}
    if method == "deepinv_diffpir":
        if st["data_step"] == "svd":  # deepinv's exact prox of a DecomposablePhysics
            svd, _ = problem_svd(op2d, st["sv_rcond"])
            physics = decomposable_physics(dinv, op2d, svd, st["sigma_n"], rdtype)
        elif st["data_step"] == "cg":
            physics = linear_physics(dinv, op2d, st["sigma_n"], st["cg_iter"], st["cg_tol"])
        else:
            raise SystemExit(f"deepinv_diffpir: data_step must be 'cg' or 'svd', found {st['data_step']!r}")
        model = dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=st["sigma_n"],
                                      max_iter=int(st["steps"]), zeta=st["zeta"], lambda_=st["lambda_"])

        def sample(yc, seed):
            torch.manual_seed(seed)
            return model(yc, physics)
    elif method == "deepinv_ddrm":
        svd, _ = problem_svd(op2d, st["sv_rcond"])  # cached: built before the clock started
        physics = decomposable_physics(dinv, op2d, svd, st["sigma_y"], rdtype)
        model = dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, int(st["steps"])), eta=st["eta"],
                                   etab=st["eta_b"])

        def sample(yc, seed):
            torch.manual_seed(seed)
            return model(yc, physics)
    elif method == "deepinv_dps":
        physics = linear_physics(dinv, op2d, 0.0, 50, 1e-4)  # only A is used ("norm" guidance)
        model = dinv.sampling.DPS(den, solver=st["solver"], num_steps=int(st["steps"]), weight=st["weight"],
                                  guidance=st["guidance"], rng=torch.Generator())
        shape = tuple(op2d.in_shape)

        def sample(yc, seed):
            return model(yc, physics, x_init=(yc.shape[0], 1, *shape), seed=seed)
    else:
        raise ValueError(method)
    outs = []
    for k, lo in enumerate(range(0, y.shape[0], chunk)):
        yc = y[lo : lo + chunk].unsqueeze(1)
        outs.append(sample(yc, seed + k).detach().squeeze(1))
    x = torch.cat(outs)
    return x.movedim(0, prob.operator.axis), info


def run_diffrecon(method: str, prob, prior, settings: dict, seed: int, chunk: int
                  ) -> tuple[torch.Tensor, dict]:
    """One diffrecon solver on the slab; returns the volume (operator layout) and extra record fields."""
    from diffrecon.recon import DDS, DPS
    from diffrecon.recon.diffusion import DDRM, DiffPIR

    kw = dict(settings, seed=seed, progress=False, chunk_size=chunk)
    info: dict = {}
    if method in ("diffpir", "diffpir_3d"):
        solver = DiffPIR.paper(prior, **kw)
    elif method == "diffpir_as_deepinv":
        solver = DiffPIR.deepinv(prior, **kw)
    elif method in ("ddrm", "ddrm_3d"):
        solver = DDRM.paper(prior, **kw)
    elif method == "ddrm_as_deepinv":
        solver = DDRM.deepinv(prior, **kw)
    elif method == "dps":
        solver = DPS(prior, **kw)
    elif method == "dds":
        if prob.modality == "ct":
            solver = DDS.default_ct(prior, n_views=prob.n_views, limited_angle=prob.name.startswith("ct-la"),
                                    **kw)
        else:
            solver = DDS.paper_mri(prior, **kw)
    else:
        raise ValueError(method)
    x, rec = solver(prob.y, prob.operator)
    info["solver_nfe"] = rec.nfe
    info["solver_settings"] = rec.settings
    return x, info


def metrics(x: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-plane PSNR/SSIM; planes whose images would be thinner than 3 pixels are NaN."""
    planes = {k: v for k, v in PLANES.items() if min(s for i, s in enumerate(truth.shape) if i != v) >= 3}
    m = plane_metrics(x, truth, planes)
    return {q: {p: m[q].get(p, math.nan) for p in PLANES} for q in ("psnr", "ssim")}


# ------------------------------------------------------------------------------------ results
def load_results(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_key(volume: str, slices, problem: str, method: str, settings: dict, seed: int, prior: str) -> str:
    blob = json.dumps([volume, slices, problem, method, settings, seed, prior], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _slab(r: dict) -> str:
    s = r.get("slices")
    out = f"{r['volume']} {s[0]}–{s[1] - 1}" if s else r["volume"]
    return out + (f" ({r['dtype']})" if r.get("dtype", "float32") != "float32" else "")


def _fmt(v: float, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows: list[dict]) -> str:
    out = ["| volume | problem | method | PSNR axial / coronal / sagittal (dB) "
           "| SSIM axial / coronal / sagittal | NFE | seconds |", "|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: (_slab(r), PROBLEMS.index(r["problem"]) if r["problem"] in PROBLEMS
                                         else 99, order.get(r["method"], 99))):
        ps = " / ".join(_fmt(r["psnr"][p], ".2f") for p in PLANES)
        ss = " / ".join(_fmt(r["ssim"][p], ".3f") for p in PLANES)
        sec = f"{r['seconds']:.1f}" + (f" (+{r['svd_seconds']:.0f} SVD)" if r.get("svd_seconds") else "")
        out.append(f"| {_slab(r)} | {r['problem']} | {LABELS.get(r['method'], r['method'])} | {ps} | {ss} | "
                   f"{_fmt(r['nfe'], 'g')} | {sec} |")
    return "\n".join(out)


def _variant(method: str, settings: dict) -> str:
    """The settings of a deepinv run that differ from :data:`DEFAULTS` (besides the step count)."""
    diff = [f"{k}={v}" for k, v in settings.items() if k != "steps" and DEFAULTS[method].get(k) != v]
    return ", ".join(diff) or "defaults"


def pairs_table(rows: list[dict], folder: pathlib.Path) -> str:
    """deepinv's sampler beside diffrecon's preset run with the same settings, data and seed; with several
    seeds, a mean row per configuration (single runs differ by their random path, the means should not)."""
    out = ["| volume | problem | sampler | steps | deepinv settings | seed | deepinv PSNR axial (dB) "
           "| diffrecon PSNR axial (dB) | Δ (dB) | max abs diff |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {r["key"]: r for r in rows}
    groups: dict = {}
    for r in rows:
        if r["method"] not in PAIRS or r.get("pair_key") not in by_key:
            continue
        d = by_key[r["pair_key"]]
        diff = "–"
        fa, fb = folder / f"{r['key']}.npy", folder / f"{d['key']}.npy"
        if fa.exists() and fb.exists():
            diff = f"{float(np.abs(np.load(fa) - np.load(fb)).max()):.2e}"
        pa, pb = d["psnr"]["axial"], r["psnr"]["axial"]
        head = (f"| {_slab(r)} | {r['problem']} | {LABELS[d['method']]} vs {LABELS[r['method']]} | "
                f"{d['settings']['steps']} | {_variant(d['method'], d['settings'])} |")
        out.append(f"{head} {r['seed']} | {pa:.3f} | {pb:.3f} | {pa - pb:+.3f} | {diff} |")
        groups.setdefault(head, []).append((pa, pb))
    for head, vals in groups.items():
        if len(vals) > 1:
            ma, mb = (float(np.mean([v[i] for v in vals])) for i in (0, 1))
            out.append(f"{head} mean of {len(vals)} | {ma:.3f} | {mb:.3f} | {ma - mb:+.3f} | |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--volume", choices=["sample", "tuning"], default="sample",
                   help="held-out sample head (evaluation) or the synthetic tuning head (choosing weights)")
    p.add_argument("--slices", nargs=2, type=int, metavar=("A", "B"),
                   help="axial slab volume[:, :, A:B] instead of the whole volume")
    p.add_argument("--prior", default="head-64")
    p.add_argument("--steps", type=int, default=None, help="steps (= NFE) of every diffusion method")
    p.add_argument("--quick", action="store_true", help="a smoke run: --steps 10 unless --steps is given")
    p.add_argument("--settings", default=None,
                   help='JSON (inline or a .json file): {"method": {"key": value}}')
    p.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="one setting (repeatable)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float64: prior, data and operators in double precision (isolates rounding)")
    p.add_argument("--chunk", type=int, default=16, help="slices per network call / per deepinv batch")
    p.add_argument("--results", default="runs/peer_samplers.jsonl",
                   help="JSON-lines results file (resumable)")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="seeds (several: every method once per seed; the pairs table gives the mean)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the markdown tables of --results and exit")
    args = p.parse_args()
    if args.quick and args.steps is None:
        args.steps = 10
    results = pathlib.Path(args.results)
    folder = results.with_suffix("")
    if args.table:
        rows = load_results(results)
        print(table(rows))
        if any(r["method"] in PAIRS for r in rows):
            print()
            print(pairs_table(rows, folder))
        return
    torch.set_num_threads(args.threads)
    settings = resolve_settings(args)

    methods = list(args.methods)
    dinv = None
    wanted = [m for m in methods if m.startswith("deepinv_")]
    if wanted:
        dinv, why = import_deepinv()
        if dinv is None:
            print(f"deepinv is not importable ({why}); skipping {', '.join(wanted)}. Install: {INSTALL_HINT}",
                  flush=True)
            methods = [m for m in methods if m not in wanted]
        else:
            from importlib.metadata import version

            print(f"deepinv {version('deepinv')}, torch {torch.__version__}", flush=True)
            if version("deepinv") != "0.5.0":
                print("warning: the deepinv presets and this wrapper were checked against deepinv 0.5.0 only")

    from diffrecon.priors import load

    dtype = getattr(torch, args.dtype)
    prior_tag = args.prior if args.dtype == "float32" else f"{args.prior}:{args.dtype}"
    prior = load(args.prior).eval().to(dtype)
    counter = NetworkCounter(prior)
    if args.volume == "tuning":
        from diffrecon.datasets.synth import tuning_volume

        full = torch.from_numpy(tuning_volume()[0])
    else:
        full = sample_volume()[0]
    slices = list(args.slices) if args.slices else None
    truth = (full[:, :, slices[0] : slices[1]] if slices else full).contiguous().to(dtype)
    if truth.shape[2] < 1:
        raise SystemExit(f"--slices {slices}: empty slab")
    n_slices = truth.shape[2]
    done = {r["key"] for r in load_results(results)}
    folder.mkdir(parents=True, exist_ok=True)
    new_rows = []
    for seed, name in [(sd, n) for sd in args.seed for n in args.problems]:
        prob = build_problem(name, truth, slice_axis=2)
        if dtype != torch.float32:
            prob.operator.to(dtype)
        for method in methods:
            st = settings[PAIRS.get(method, method)]
            pair_key = None
            if method in PAIRS:
                pair_key = run_key(args.volume, slices, name, PAIRS[method], [st, None], seed, prior_tag)
                st = pair_settings(method, st)
            key = run_key(args.volume, slices, name, method, [st, pair_key], seed, prior_tag)
            if key in done:
                print(f"{name:8s} {method:20s} already in {results}", flush=True)
                continue
            pre = {}
            if needs_svd(method, st):  # the one-time SVD, before the clock starts
                _, pre["svd_seconds"] = problem_svd(prob.operator.op2d, st.get("sv_rcond", 1e-5))
            counter.reset()
            t0 = time.perf_counter()
            if method.startswith("deepinv_"):
                x, info = run_deepinv(method, dinv, prob, prior, st, seed, args.chunk)
            else:
                x, info = run_diffrecon(method, prob, prior, st, seed, args.chunk)
            sec = time.perf_counter() - t0
            info.update(pre)
            x = (x.real if x.is_complex() else x).detach().to(torch.float32)
            m = metrics(x, truth)
            np.save(folder / f"{key}.npy", x.numpy())
            row = {"volume": args.volume, "slices": slices, "problem": name, "method": method,
                   "library": "deepinv" if method.startswith("deepinv_") else "diffrecon",
                   "psnr": m["psnr"], "ssim": m["ssim"], "nfe": counter.items / n_slices,
                   "network_calls": counter.calls, "seconds": round(sec, 2), "settings": st, "key": key,
                   "pair_key": pair_key, "seed": seed, "prior": args.prior, "threads": args.threads,
                   "chunk": args.chunk, "dtype": args.dtype, "date": time.strftime("%Y-%m-%d"), **info}
            if row["nfe"] == int(row["nfe"]):
                row["nfe"] = int(row["nfe"])
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            new_rows.append(row)
            print(f"{name:8s} {method:20s} PSNR " + " / ".join(_fmt(v, ".2f") for v in m["psnr"].values())
                  + f"  NFE {row['nfe']} ({counter.calls} calls)  {sec:.1f} s"
                  + (f" (+{info['svd_seconds']:.0f} s SVD)" if info.get("svd_seconds") else ""), flush=True)
    rows = load_results(results)
    if any(r["method"] in PAIRS for r in new_rows):
        print()
        print(pairs_table(rows, folder))


if __name__ == "__main__":
    main()
