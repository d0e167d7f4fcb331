r"""DDS2M: self-supervised denoising-diffusion spatio-spectral model for hyperspectral restoration.

Miao, Zhang, Zhang & Tao, *ICCV 2023* (arXiv 2303.06682). No pretrained network: a small
variational spatio-spectral module (:class:`~diffrecon.priors.networks.vs2m.VS2M`, rank-R spatial
maps × spectral signatures) is fitted to the degraded cube *while* a DDRM reverse diffusion runs,
and supplies the clean-cube estimate :math:`\hat x_0` that DDRM needs at every step.

Model (all in the [−1, 1] scaling the paper uses: a cube :math:`c\in[0,1]^{H\times W\times B}` is
``x = 2c − 1``; a measurement ``y = A c + σ n`` becomes ``y' = 2y − A(1) = A x + 2σ n``):

* forward process (VP, discrete): :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`,
  :math:`\beta` linear from 1e-4 to 5e-3 over T steps (not DDPM's 0.02), :math:`\bar\alpha_{-1}=1`
  (the shared :meth:`VPSchedule.linear <diffrecon.priors.schedule.VPSchedule.linear>`, float64;
  :meth:`DDS2M.schedule`);
* ``σ_t = √(1−ᾱ_t)/√ᾱ_t`` is the noise level of :math:`x_t/\sqrt{\bar\alpha_t}`;
* with the operator's SVD ``A = U diag(s) Vᵀ`` (:class:`~diffrecon.operators.hsi.SVDOperator`),
  ``ȳ = Uᵀy'`` and ``v̂ = Vᵀx̂0``, each spectral coordinate of :math:`x_{t-1}/\sqrt{\bar\alpha_{t-1}}`
  is drawn by DDRM's rule (σ₀ = 2σ, σ' = σ_{t−1}, z ~ N(0, 1)):

  - null space (s = 0):       ``v̂ + √(1−η²) σ' Vᵀε̂ + η σ' z``
  - ``s σ' < σ₀`` (cleaner than y): ``v̂ + √(1−η²) σ' (ȳ − s v̂)/σ₀ + η σ' z``
  - ``s σ' > σ₀`` (noisier than y): ``η_B ȳ/s + (1−η_B) v̂ + √(σ'² − η_B² σ₀²/s²) z``

  where ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t);
* :math:`\hat x_0` comes from VS2M: before loop iteration ``start_point`` the network is not run
  and x̂0 := x_t (so the chain effectively starts at t ≈ T/2); from then on, each iteration takes
  **one Adam step** (lr 5e-4; ``updates_per_step`` > 1 takes several on the same target) on
  ``‖√ᾱ_t (2X̂−1) − x_t‖²/N (+ tv_weight · TV₃(2X̂−1))``, with the
  network and the optimiser state persisting across steps, and x̂0 = 2·avg − 1 where
  ``avg ← clip(0.98·avg + 0.02·X̂, 0, 1)`` is an exponential moving average of the outputs (seeded by
  the previous step's x̂0).
* The result is the final iterate mapped back to [0, 1] (DDRM's last step has ᾱ = 1, so it equals
  the last x̂0 on observed coordinates). With ``ground_truth`` the best-MPSNR x̂0 along the way is
  also returned — an **oracle** choice that needs the answer, so it is labelled as such and never
  the method's output.

Per-task defaults from the official code (``configs/*.yml`` and the run scripts):

=========  =====  ============  =====  ====  ==============
task       T      start_point   η      η_B   SVD cut-off
=========  =====  ============  =====  ====  ==============
denoise    2000   1000          1.0    1.0   0
inpaint    3000   1500          0.95   1.0   0
sr         1000   500           0.95   1.0   3e-2
=========  =====  ============  =====  ====  ==============

Everything stays on the device of the measurement: no per-step host round-trips (the progress bar
only counts iterations; the oracle bookkeeping uses ``torch.where``).

Result contract (shared by every solver of :mod:`diffrecon.recon`): :meth:`DDS2M.restore` returns a
:class:`DDS2MResult`, a :class:`~diffrecon.recon.diffusion.records.Reconstruction` ``(image, record)``
(so ``image, record = result`` works) whose ``record`` is a
:class:`~diffrecon.recon.diffusion.records.SolveRecord` with ``method="dds2m"``; the DDS2M-specific,
JSON-ready outcomes (σ used, rank rule, network, timings, oracle summary, …) are in ``record.extra``
and the oracle tensors are attributes of the result. The ``on_step(i, x, info)`` callback has the
signature of every diffusion solver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import InputDataError
from ..metrics import mpsnr_tensor
from ..operators.elementary import FiniteDifference
from ..operators.hsi import Denoising, Inpainting, SVDOperator, check_cube, check_sigma
from ..operators.noise import estimate_sigma
from ..priors.networks.vs2m import LITE, PAPER, VS2M, VS2MConfig
from ..priors.schedule import VPSchedule
from .diffusion.records import Reconstruction, SolveRecord
from .hsi_baselines import subspace_rank

Tensor = torch.Tensor

__all__ = [
    "DDS2M",
    "DDS2MResult",
    "PAPER_RANK",
    "TASK_DEFAULTS",
    "TUNED_DENOISE",
    "auto_rank",
    "dds2m_restore",
]

TASK_DEFAULTS: dict[str, dict] = {
    "denoise": {"num_steps": 2000, "start_point": 1000, "eta": 1.0, "eta_b": 1.0, "sv_cutoff": 0.0},
    "inpaint": {"num_steps": 3000, "start_point": 1500, "eta": 0.95, "eta_b": 1.0, "sv_cutoff": 0.0},
    "sr": {"num_steps": 1000, "start_point": 500, "eta": 0.95, "eta_b": 1.0, "sv_cutoff": 3e-2},
}
"""The official per-task settings (T = number of diffusion steps, all visited)."""

PRESETS = {"paper": PAPER, "lite": LITE}

TUNED_DENOISE: dict = {
    "network": "lite",
    "rank": 5,
    "lr": 5e-3,
    "upsample": "nearest",
    "eta_b": 0.5,
    "samples": 4,
}
"""Denoising settings checked on held-out cubes (``docs/benchmarks/hsi.md``), used by
:meth:`DDS2M.tuned_denoiser` and the CLI's ``--tuned``: not the paper's (lr 5e-4, bilinear, η_B = 1,
R = 10, one chain). R = 5 is for cubes with at least :data:`TUNED_MIN_BANDS` bands; fewer bands get
``rank="auto"``."""

TUNED_MIN_BANDS = 10

PAPER_RANK = 10
"""R of the official code (``--rank`` default); also the fall-back of ``rank="auto"`` for inpainting."""


def auto_rank(y: Tensor, operator: SVDOperator, sigma: float) -> tuple[int, str]:
    r"""Data-driven VS2M rank for ``rank="auto"``: ``(R, rule)``.

    * Operators whose measurement is a full image cube with white noise σ — :class:`Denoising`,
      ``SpatialSR`` (the low-resolution cube), ``MissingBands`` (the kept bands), ``SpectralCS``
      (orthonormal spectral projections) — keep (or lower) the spectral rank of the clean cube, so
      R is the Marchenko–Pastur signal rank of the measurement itself:
      the number of eigenvalues of ``YᵀY/N`` (``Y``: N×B' pixels × bands of ``y``) above
      ``1.05·σ²(1 + √(B'/N))²`` (:func:`~diffrecon.recon.hsi_baselines.subspace_rank`, the rule the
      subspace baseline uses).
    * :class:`Inpainting`: a voxel-masked cube has no such noise model (80 % zeros, no pixel with
      all bands observed), so R falls back to the paper's :data:`PAPER_RANK` = 10.

    In both cases R is capped at ``max(1, B − 1)`` (B = bands of the restored cube): R ≥ B removes
    VS2M's spectral low-rank constraint.

    Args:
        y: measurement of shape ``operator.out_shape``. operator: the degradation.
        sigma: noise standard deviation of ``y`` (data units, > 0).
    """
    b = int(operator.in_shape[-1])
    cap = max(1, b - 1)
    if isinstance(operator, Inpainting) or y.ndim != 3:
        rule = f"fixed {PAPER_RANK} (paper value; no Marchenko-Pastur rule for {type(operator).__name__})"
        return min(PAPER_RANK, cap), rule
    r = subspace_rank(y.detach().float(), float(sigma))
    return min(r, cap), f"Marchenko-Pastur signal rank of the measurement ({r}), capped at max(1, B-1)={cap}"


ORACLE_MSE_FLOOR = 1e-20
"""Per-band MSE floor of the oracle MPSNR (:func:`~diffrecon.metrics.mpsnr_tensor`): a band that
matches the ground truth exactly scores 200 dB instead of inf, so the running maximum stays finite."""

_TV_DIFFERENCES = tuple(FiniteDifference(axis, "neumann") for axis in (-3, -2, -1))


def _tv3(x: Tensor) -> Tensor:
    """Anisotropic 3-D total variation: mean absolute forward difference along y, x and band, summed.

    Each mean runs over the ``n − 1`` interior differences of its axis only: the Neumann
    :class:`~diffrecon.operators.elementary.FiniteDifference` sets the last one to zero, and it is cut
    off before the mean, so the weight of each axis is that of ``x.diff(dim)`` (the paper's TV term).
    The value is bit-identical to the sum of ``x.diff(dim).abs().mean()``; its autograd gradient
    equals theirs up to float rounding (autograd adds the six shifted contributions in another order).
    """
    total = torch.zeros((), device=x.device)
    for d in _TV_DIFFERENCES:
        n = x.shape[d.axis]
        total = total + d(x).narrow(d.axis, 0, n - 1).abs().mean()
    return total


@dataclass
class _ChainData:
    """What every chain of one :meth:`DDS2M.restore` call shares (measurement in the [−1, 1] scaling)."""

    op: SVDOperator
    shape: tuple[int, int, int]
    sigma0: float  # noise std of the rescaled measurement (2σ)
    s: Tensor  # singular values after the cut-off (one per spectral coordinate of V)
    observed: Tensor  # s > 0
    s_safe: Tensor  # s with 1 where s = 0 (safe divisor)
    ut_y: Tensor  # Uᵀy' (0 where s = 0)
    y_over_s: Tensor  # Uᵀy'/s
    abar: Tensor  # ᾱ_t, float64, shape (T,)
    ground_truth: Tensor | None


@dataclass
class _ChainOutput:
    """One chain's final iterate and bookkeeping."""

    depth: int
    n_parameters: int
    oracle_val: Tensor  # best MPSNR so far (−inf without ground truth), on the device
    oracle_step: Tensor  # loop iteration (1-based) of oracle_cube
    cube: Tensor | None = None  # final iterate in [0, 1], set when the chain ends
    n_updates: int = 0
    t_net: float = 0.0
    cpu_net: float = 0.0
    losses: list[Tensor] = field(default_factory=list)
    oracle_cube: Tensor | None = None
    history: list[Tensor] = field(default_factory=list)


class DDS2MResult(Reconstruction):
    """What :meth:`DDS2M.restore` returns: a :class:`~diffrecon.recon.diffusion.records.Reconstruction`
    ``(image, record)`` with the oracle outcomes as extra attributes.

    It unpacks and indexes like every solver's result (``image, record = result``), and
    ``isinstance(result, Reconstruction)`` holds.

    Attributes:
        image: the restored cube ``(H, W, B)`` in data units — DDS2M's output (the final iterate, or
            the mean of the chains' final iterates).
        record: :class:`~diffrecon.recon.diffusion.records.SolveRecord` with ``method="dds2m"``,
            ``nfe`` (VS2M forward passes, all chains together), ``seconds``, ``steps`` (T),
            ``seed``, ``settings`` (= :meth:`DDS2M.settings`) and, in ``extra`` (JSON-ready):
            the R used (``rank``) and its rule (``rank_rule``), ``sigma`` and ``sigma_estimated``,
            the network (``network``, ``network_config``, ``network_depth``,
            ``network_parameters``), ``operator``, ``shape``, ``device``, ``chain_seeds``,
            ``nfe_per_chain``, ``cpu_seconds``, ``seconds_per_update``, ``cpu_seconds_per_update``,
            ``loss_trace``, ``output`` (which estimate ``image`` is) and, with a ground truth,
            ``oracle`` (``mpsnr``, ``step``, ``chain``, ``note``).
        oracle_image: best-MPSNR intermediate x̂0 against ``ground_truth`` (only when it was given).
            An ORACLE selection: it peeks at the answer and must not be reported as the method's result.
        oracle_mpsnr / oracle_step: its MPSNR (dB) and the loop iteration (1-based, i.e. the
            ``on_step`` index + 1) it came from.
        history: per-update MPSNR of x̂0 against the ground truth (when given), for plots.
    """

    # class-level fallbacks for instances built by the tuple machinery (``_make``, ``_replace``)
    oracle_image: Tensor | None = None
    oracle_mpsnr: float | None = None
    oracle_step: int | None = None
    history: list[float] = ()  # type: ignore[assignment]  # instances always get their own list

    def __new__(
        cls,
        image: Tensor,
        record: SolveRecord,
        oracle_image: Tensor | None = None,
        oracle_mpsnr: float | None = None,
        oracle_step: int | None = None,
        history: list[float] | None = None,
    ) -> DDS2MResult:
        self = super().__new__(cls, image, record)
        self.oracle_image = oracle_image
        self.oracle_mpsnr = oracle_mpsnr
        self.oracle_step = oracle_step
        self.history = [] if history is None else list(history)
        return self


class DDS2M:
    """Self-supervised DDS2M restoration of one hyperspectral cube (see the module docstring).

    Args:
        task: ``"denoise"``, ``"inpaint"`` or ``"sr"``; selects T, start point, η and η_B defaults
            (:data:`TASK_DEFAULTS`). Other SVD operators (missing bands, spectral CS) use the
            ``"inpaint"`` defaults.
        num_steps: T (all steps are visited, as in the paper).
        start_point: loop iteration (1-based) from which VS2M is updated; ``T − start_point + 1``
            Adam steps in total (times ``updates_per_step``).
        eta: DDRM's η (= η_A = η_C).
        eta_b: DDRM's η_B.
        beta_start: first β of the linear schedule.
        beta_end: last β of the linear schedule.
        rank: R, number of spatial maps / spectral signatures: an int (paper: 10,
            :data:`PAPER_RANK`) or ``"auto"`` = the Marchenko–Pastur signal rank of the measurement
            (:func:`auto_rank`; inpainting falls back to 10). The record holds the R used
            (``record.extra["rank"]``), what was asked (``record.settings["rank"]``) and the rule
            (``record.extra["rank_rule"]``).
        network: ``"paper"`` (published widths), ``"lite"`` (narrow, 3×3 kernels; for CPU),
            ``"auto"`` (paper on CUDA, lite on CPU), or a :class:`VS2MConfig`.
        depth: hourglass levels (capped by the image size; ``None`` = as many as fit, up to 6).
        upsample: decoder upsampling of the spatial nets, ``"bilinear"`` (paper) or ``"nearest"``
            (sharper edges, fits noise sooner; pair it with ``eta_b`` < 1, see the HSI docs);
            ``None`` keeps the network config's value (bilinear in both presets).
        lr: Adam learning rate (paper: 5e-4). ema: EMA weight of the running output (paper: 0.98).
        updates_per_step: Adam steps on the same target x_t per diffusion step (paper: 1, the
            official ``iter_number: 0``); the EMA is updated after each of them.
        tv_weight: weight β of the optional 3-D TV term (paper default 0).
        sv_cutoff: singular values below it are treated as 0 (paper: 3e-2 for SR).
        samples: number K of independent DDS2M chains (seeds ``seed``, ``seed + 1``, …) whose final
            iterates are averaged. Each chain ends in a sample of DDRM's approximate posterior, so the
            average is a Monte-Carlo estimate of the posterior mean, the MSE-optimal estimate
            (MPSNR rises with K and saturates; cost grows ×K). **Our extension**: the paper
            reports one chain (K = 1, the default).
        seed: seeds the network initialisation, its fixed inputs and the diffusion noise.
        progress: show a tqdm bar.
        on_step: optional ``on_step(i, x, info)`` after each step that updates VS2M (the shared
            callback of every diffusion solver): ``i`` is the 0-based step index (loop iteration
            ``i + 1``; ``i`` restarts at 0 for each chain), ``x`` the current clean estimate (the EMA
            of VS2M's outputs) in data units, ``(H, W, B)`` in [0, 1], and ``info`` holds ``"t"`` (the
            diffusion time index, ``T − 1 − i``), ``"nfe"`` (VS2M forward passes so far, all chains
            together; the last call's value is ``record.nfe``) and ``"chain"`` (0 … K−1). Calling
            ``.item()`` inside it forces a device sync.

    Example::

        >>> from diffrecon.operators.hsi import Denoising
        >>> from diffrecon.operators.noise import add_gaussian_noise
        >>> clean = torch.rand(32, 32, 8)
        >>> noisy = add_gaussian_noise(clean, 0.1)
        >>> cube, record = DDS2M("denoise", num_steps=40, start_point=20, network="lite", rank=3,
        ...                      progress=False).restore(noisy, sigma=0.1)
        >>> cube.shape, record.method, record.nfe
        (torch.Size([32, 32, 8]), 'dds2m', 21)
    """

    def __init__(
        self,
        task: str = "denoise",
        *,
        num_steps: int | None = None,
        start_point: int | None = None,
        eta: float | None = None,
        eta_b: float | None = None,
        beta_start: float = 1e-4,
        beta_end: float = 5e-3,
        rank: int | str = PAPER_RANK,
        network: str | VS2MConfig = "auto",
        depth: int | None = None,
        upsample: str | None = None,
        lr: float = 5e-4,
        ema: float = 0.98,
        updates_per_step: int = 1,
        tv_weight: float = 0.0,
        sv_cutoff: float | None = None,
        samples: int = 1,
        seed: int = 1234,
        progress: bool = True,
        on_step: Callable | None = None,
    ):
        if task not in TASK_DEFAULTS:
            raise InputDataError(f"DDS2M: task must be one of {sorted(TASK_DEFAULTS)}, found {task!r}")
        d = TASK_DEFAULTS[task]
        self.task = task
        self.num_steps = int(d["num_steps"] if num_steps is None else num_steps)
        self.start_point = int(d["start_point"] if start_point is None else start_point)
        self.eta = float(d["eta"] if eta is None else eta)
        self.eta_b = float(d["eta_b"] if eta_b is None else eta_b)
        self.sv_cutoff = float(d["sv_cutoff"] if sv_cutoff is None else sv_cutoff)
        if self.num_steps < 1:
            raise InputDataError(f"DDS2M: num_steps must be >= 1, found {self.num_steps}")
        if not 1 <= self.start_point <= self.num_steps:
            raise InputDataError(
                f"DDS2M: start_point must be in [1, num_steps={self.num_steps}], found {self.start_point}"
            )
        for name, v in (("eta", self.eta), ("eta_b", self.eta_b)):
            if not 0.0 <= v <= 1.0:
                raise InputDataError(f"DDS2M: {name} must be in [0, 1], found {v}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise InputDataError(
                f"DDS2M: need 0 < beta_start <= beta_end < 1, found {beta_start}, {beta_end}"
            )
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise InputDataError(f"DDS2M: lr must be a finite number > 0, found {lr!r}")
        if not 0.0 <= ema < 1.0:
            raise InputDataError(f"DDS2M: ema must be in [0, 1), found {ema}")
        ups = updates_per_step
        if isinstance(ups, bool) or not isinstance(ups, int) or ups < 1:
            raise InputDataError(f"DDS2M: updates_per_step must be an integer >= 1, found {ups!r}")
        self.updates_per_step = int(updates_per_step)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InputDataError(f"DDS2M: samples must be an integer >= 1, found {samples!r}")
        self.samples = int(samples)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        if isinstance(rank, str):
            if rank.strip().lower() != "auto":
                try:
                    rank = int(rank)
                except ValueError:
                    msg = f"DDS2M: rank must be a positive integer or 'auto', found {rank!r}"
                    raise InputDataError(msg) from None
            else:
                rank = "auto"
        if rank != "auto" and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise InputDataError(f"DDS2M: rank must be a positive integer or 'auto', found {rank!r}")
        self.rank: int | str = rank
        self.network = network
        self.depth = depth
        if upsample not in (None, "bilinear", "nearest"):
            raise InputDataError(f"DDS2M: upsample must be 'bilinear' or 'nearest', found {upsample!r}")
        self.upsample = upsample
        self.lr = float(lr)
        self.ema = float(ema)
        self.tv_weight = float(tv_weight)
        self.seed = int(seed)
        self.progress = progress
        self.on_step = on_step

    @classmethod
    def tuned_denoiser(cls, bands: int, **overrides) -> DDS2M:
        """Denoising with :data:`TUNED_DENOISE` (``rank="auto"`` below :data:`TUNED_MIN_BANDS` bands).

        These beat the FastHyDe-style subspace denoiser on our σ = 0.1 benchmark cubes where the
        paper's settings do not; ``overrides`` (any constructor argument) take precedence.

        Example::

            >>> DDS2M.tuned_denoiser(31).settings()["samples"]
            4
        """
        if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1:
            raise InputDataError(f"DDS2M.tuned_denoiser: bands must be a positive integer, found {bands!r}")
        kw = dict(TUNED_DENOISE)
        if bands < TUNED_MIN_BANDS:
            kw["rank"] = "auto"
        kw.update(overrides)
        return cls("denoise", **kw)

    # ---------------------------------------------------------------------------------------
    def _config(self, device: torch.device, rank: int) -> tuple[str, VS2MConfig]:
        net = self.network
        if isinstance(net, VS2MConfig):
            name, cfg = "custom", net
        elif net == "auto":
            name = "paper" if device.type == "cuda" else "lite"
            cfg = PRESETS[name]
        elif net in PRESETS:
            name, cfg = net, PRESETS[net]
        else:
            raise InputDataError(
                f"DDS2M: network must be 'auto', 'paper', 'lite' or a VS2MConfig, found {net!r}"
            )
        cfg = cfg.replace(
            rank=int(rank),
            depth=self.depth if self.depth is not None else cfg.depth,
            upsample=self.upsample or cfg.upsample,
        )
        return name, cfg

    def schedule(self) -> VPSchedule:
        """The discrete VP noise schedule: :meth:`VPSchedule.linear
        <diffrecon.priors.schedule.VPSchedule.linear>` ``(T, beta_start, beta_end)`` (float64)."""
        return VPSchedule.linear(self.num_steps, self.beta_start, self.beta_end)

    def settings(self) -> dict:
        """The hyperparameters (``record.settings``; ``rank`` is the value asked for, possibly
        ``"auto"``, while ``record.extra["rank"]`` is the R used)."""
        return {
            "task": self.task,
            "num_steps": self.num_steps,
            "start_point": self.start_point,
            "eta": self.eta,
            "eta_b": self.eta_b,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "rank": self.rank,
            "lr": self.lr,
            "ema": self.ema,
            "updates_per_step": self.updates_per_step,
            "tv_weight": self.tv_weight,
            "sv_cutoff": self.sv_cutoff,
            "samples": self.samples,
            "seed": self.seed,
        }

    def restore(
        self,
        y: Tensor,
        operator: SVDOperator | None = None,
        sigma: float | None = None,
        ground_truth: Tensor | None = None,
    ) -> DDS2MResult:
        """Restore a cube from the degraded measurement ``y``.

        Args:
            y: measurement of shape ``operator.out_shape`` in data units (the clean cube is assumed
                to lie in [0, 1]; rescale other data first, e.g. with
                :func:`diffrecon.datasets.hsi.normalize`). Finite values only.
            operator: an :class:`~diffrecon.operators.hsi.SVDOperator`; ``None`` means
                :class:`~diffrecon.operators.hsi.Denoising` of ``y``'s shape.
            sigma: Gaussian noise standard deviation of ``y`` in data units (> 0). ``None``:
                estimated from ``y`` (:func:`~diffrecon.operators.hsi.estimate_sigma`) when
                ``y`` is a full image (denoising, SR, missing bands); inpainting needs it given.
            ground_truth: optional clean cube ``(H, W, B)``, only for the oracle bookkeeping.

        Returns:
            :class:`DDS2MResult` ``(image, record)`` (``image`` on ``y``'s device, float32).
        """
        check_cube(y, "DDS2M: measurement y")
        if operator is None:
            if y.ndim != 3:
                raise InputDataError(f"DDS2M: expected y of shape (H, W, B), found {tuple(y.shape)}")
            operator = Denoising(tuple(y.shape))
        if not isinstance(operator, SVDOperator):
            raise InputDataError(
                f"DDS2M: the operator must expose its SVD (a diffrecon.operators.hsi.SVDOperator), "
                f"found {type(operator).__name__}"
            )
        if tuple(y.shape) != tuple(operator.out_shape):
            raise InputDataError(
                f"DDS2M: y has shape {tuple(y.shape)} but the operator produces {tuple(operator.out_shape)}"
            )
        device = y.device
        shape = tuple(operator.in_shape)
        if ground_truth is not None:
            check_cube(ground_truth, "DDS2M: ground_truth")
            if tuple(ground_truth.shape) != shape:
                raise InputDataError(
                    f"DDS2M: ground_truth has shape {tuple(ground_truth.shape)}, expected {shape}"
                )
            ground_truth = ground_truth.to(device=device, dtype=torch.float32)
        estimated = sigma is None
        if estimated:
            if isinstance(operator, Inpainting):
                raise InputDataError(
                    "DDS2M: sigma cannot be estimated from a voxel-masked cube; pass sigma "
                    "(the noise standard deviation of the observed voxels, e.g. 0.1)"
                )
            sigma = float(estimate_sigma(y.float()))
            if not sigma > 0:
                raise InputDataError(
                    "DDS2M: the estimated noise level is 0 (piecewise-constant or noise-free "
                    "data?); pass sigma explicitly"
                )
        sigma = float(check_sigma(sigma, "DDS2M: sigma"))

        op = operator.to(device)
        if self.rank == "auto":
            rank, rank_rule = auto_rank(y, op, sigma)
        else:
            rank, rank_rule = int(self.rank), "given"
        net_name, cfg = self._config(device, rank)
        b = shape[-1]
        if rank >= b:
            import warnings

            warnings.warn(
                f"DDS2M: rank R={rank} >= number of bands B={b}: VS2M then has no spectral low-rank "
                f"constraint and tends to fit the noise (final iterate far below the best one); use R < B, "
                f"e.g. rank={max(1, b - 1)}",
                stacklevel=2,
            )
        dt = torch.float32
        t_start = time.perf_counter()
        cpu_start = time.process_time()

        # -- data in the [-1, 1] scaling (shared by every chain) -----------------------------
        y_s = 2.0 * y.to(dt) - op.ones_image(dt, device)
        s = op.singular_values().to(device=device, dtype=dt)
        s = torch.where(s > self.sv_cutoff, s, torch.zeros_like(s)) if self.sv_cutoff > 0 else s
        observed = s > 0
        s_safe = torch.where(observed, s, torch.ones_like(s))
        ut_y = torch.where(observed, op.Ut(y_s), torch.zeros_like(s))
        data = _ChainData(
            op=op,
            shape=shape,
            sigma0=2.0 * sigma,
            s=s,
            observed=observed,
            s_safe=s_safe,
            ut_y=ut_y,
            y_over_s=ut_y / s_safe,
            abar=self.schedule().alphas_cumprod,
            ground_truth=ground_truth,
        )

        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.num_steps * self.samples,
            desc=f"DDS2M {self.task}" + (f" ({self.samples} chains)" if self.samples > 1 else ""),
            unit="step",
            disable=not self.progress,
            leave=False,
        )
        chains: list[_ChainOutput] = []
        for k in range(self.samples):
            nfe_before = sum(c.n_updates for c in chains)
            chains.append(self._chain(data, cfg, self.seed + k, bar, chain=k, nfe_before=nfe_before))
        bar.close()

        cube = torch.stack([c.cube for c in chains]).mean(0) if self.samples > 1 else chains[0].cube
        n_updates = sum(c.n_updates for c in chains)
        t_net = sum(c.t_net for c in chains)
        cpu_net = sum(c.cpu_net for c in chains)
        seconds = time.perf_counter() - t_start
        extra = {
            "rank": rank,
            "rank_rule": rank_rule,
            "network": net_name,
            "network_config": cfg.to_dict(),
            "network_depth": chains[0].depth,
            "network_parameters": chains[0].n_parameters,
            "sigma": sigma,
            "sigma_estimated": estimated,
            "operator": type(op).__name__,
            "shape": list(shape),
            "device": str(device),
            "chain_seeds": [self.seed + k for k in range(self.samples)],
            "nfe_per_chain": chains[0].n_updates,
            "cpu_seconds": time.process_time() - cpu_start,
            "seconds_per_update": t_net / max(n_updates, 1),
            "cpu_seconds_per_update": cpu_net / max(n_updates, 1),
            "loss_trace": [float(v) for v in chains[0].losses],
            "output": "final iterate"
            if self.samples == 1
            else f"mean of {self.samples} chains' final iterates",
        }
        oracle: dict = {}
        if ground_truth is not None and chains[0].oracle_cube is not None:
            vals = [float(c.oracle_val) for c in chains]
            best = max(range(self.samples), key=vals.__getitem__)
            chain = chains[best]
            oracle = {
                "oracle_image": chain.oracle_cube.detach(),
                "oracle_mpsnr": vals[best],
                "oracle_step": int(chain.oracle_step),
                "history": [float(v) for v in torch.stack(chain.history).cpu()],
            }
            extra["oracle"] = {
                "mpsnr": oracle["oracle_mpsnr"],
                "step": oracle["oracle_step"],
                "chain": best,
                "note": "ORACLE: best x0 of one chain, chosen with the ground truth; not the method's output",
            }
        record = SolveRecord(
            method="dds2m",
            nfe=n_updates,
            slice_evaluations=n_updates,  # one cube: every VS2M forward pass is one evaluation
            seconds=seconds,
            steps=self.num_steps,
            seed=self.seed,
            settings=self.settings(),
            extra=extra,
        )
        return DDS2MResult(cube, record, **oracle)

    def _chain(
        self, d: _ChainData, cfg: VS2MConfig, seed: int, bar, chain: int = 0, nfe_before: int = 0
    ) -> _ChainOutput:
        """One DDS2M chain (network, optimiser and noise seeded with ``seed``; see the module docstring).

        ``chain`` and ``nfe_before`` (VS2M forwards of the earlier chains) only feed ``on_step``'s info."""
        device, shape, op, dt = d.s.device, d.shape, d.op, torch.float32
        h, w, b = shape
        s, observed, s_safe, sigma0 = d.s, d.observed, d.s_safe, d.sigma0
        abar_ext = torch.cat([torch.ones(1, dtype=torch.float64), d.abar])  # index t+1; t = -1 → 1
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)

        def randn() -> Tensor:
            return torch.randn(shape, generator=gen, device=device, dtype=dt)

        # -- network -----------------------------------------------------------------------
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g_in = torch.Generator().manual_seed(seed)
            net = VS2M(h, w, b, config=cfg, generator=g_in)
        net = net.to(device)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)

        # -- x_T: DDRM's initialisation (y back-projected + noise of the largest level) ------
        a_T = float(d.abar[-1])
        sig_T = math.sqrt(1 - a_T) / math.sqrt(a_T)
        big = observed & (s * sig_T > sigma0)
        inv = torch.where(big, sigma0 / s_safe, torch.zeros_like(s))
        init = (
            torch.where(big, d.y_over_s, torch.zeros_like(s))
            + (sig_T**2 - inv**2).clamp_min(0).sqrt() * randn()
        )
        x = op.V(init / sig_T)

        res = _ChainOutput(
            depth=net.depth,
            n_parameters=net.n_parameters(),
            oracle_val=torch.full((), -math.inf, device=device),
            oracle_step=torch.zeros((), dtype=torch.long, device=device),
        )
        prev01 = torch.zeros(shape, device=device, dtype=dt)  # EMA seed (official: 0 before any step)
        x0 = x
        eta, eta_b = self.eta, self.eta_b
        for it in range(1, self.num_steps + 1):
            t = self.num_steps - it  # current time index
            a_t, a_next = float(abar_ext[t + 1]), float(abar_ext[t])
            sa_t, s1a_t = math.sqrt(a_t), math.sqrt(1 - a_t)
            if it >= self.start_point:
                t0, c0 = time.perf_counter(), time.process_time()
                avg = prev01
                for _ in range(self.updates_per_step):
                    opt.zero_grad(set_to_none=True)
                    out = net()
                    loss = (sa_t * (2 * out - 1) - x).pow(2).mean()
                    if self.tv_weight:
                        loss = loss + self.tv_weight * _tv3(2 * out - 1)
                    loss.backward()
                    with torch.no_grad():
                        avg = (self.ema * avg + (1 - self.ema) * out.detach()).clamp(0, 1)
                    opt.step()
                    res.n_updates += 1
                x0 = 2 * avg - 1
                if (it - self.start_point) % 50 == 0 or it == self.num_steps:
                    res.losses.append(loss.detach())
                if d.ground_truth is not None:
                    score = mpsnr_tensor(avg, d.ground_truth, mse_floor=ORACLE_MSE_FLOOR)
                    better = score > res.oracle_val
                    prev_best = res.oracle_cube
                    res.oracle_cube = (
                        avg.clone() if prev_best is None else torch.where(better, avg, prev_best)
                    )
                    res.oracle_step = torch.where(better, torch.tensor(it, device=device), res.oracle_step)
                    res.oracle_val = torch.maximum(score, res.oracle_val)
                    res.history.append(score)
                if self.on_step is not None:
                    self.on_step(it - 1, avg, {"t": t, "nfe": nfe_before + res.n_updates, "chain": chain})
                res.t_net += time.perf_counter() - t0
                res.cpu_net += time.process_time() - c0
            else:
                x0 = x
            with torch.no_grad():
                eps = (x - sa_t * x0) / s1a_t
                sig_next = math.sqrt(1 - a_next) / math.sqrt(a_next)
                v0 = op.Vt(x0)
                std_c = sig_next * eta
                tilde_c = math.sqrt(max(sig_next**2 - std_c**2, 0.0))
                v = v0 + tilde_c * op.Vt(eps) + std_c * randn()  # null space
                after = observed & (s * sig_next < sigma0)
                before = observed & (s * sig_next > sigma0)
                v_after = v0 + tilde_c * (d.ut_y - s * v0) / sigma0 + std_c * randn()
                diff_b = (sig_next**2 - (sigma0 * eta_b / s_safe) ** 2).clamp_min(0).sqrt()
                v_before = eta_b * d.y_over_s + (1 - eta_b) * v0 + diff_b * randn()
                v = torch.where(before, v_before, torch.where(after, v_after, v))
                x = math.sqrt(a_next) * op.V(v)
                prev01 = ((x0 + 1) / 2).clamp(0, 1)
            bar.update(1)

        res.cube = ((x + 1) / 2).clamp(0, 1).detach()
        return res


def dds2m_restore(
    y: Tensor,
    operator: SVDOperator | None = None,
    sigma: float | None = None,
    task: str = "denoise",
    ground_truth: Tensor | None = None,
    **kw,
) -> DDS2MResult:
    """Functional shortcut: ``DDS2M(task, **kw).restore(y, operator, sigma, ground_truth)``."""
    return DDS2M(task, **kw).restore(y, operator, sigma=sigma, ground_truth=ground_truth)
