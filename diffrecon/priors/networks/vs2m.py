"""VS2M: the variational spatio-spectral module of DDS2M (Miao et al., ICCV 2023).

A hyperspectral cube ``X`` of shape ``(H, W, B)`` is generated as a rank-R linear mixture

.. math::  X[h, w, b] = \\sum_{r=1}^{R} S_r[h, w] \\; E_r[b] ,

where each *spatial map* ``S_r`` (an "abundance") is the output of its own small hourglass
(deep-image-prior) U-Net fed with a fixed uniform noise image, and each *spectral signature*
``E_r`` is the output of its own MLP fed with a fixed uniform noise vector of length B. Nothing is
pretrained: the weights are fitted to the degraded cube during DDS2M's reverse diffusion.

Implementation notes (this is our own implementation of the published architecture):

* The R spatial nets are independent but run as **one** network with grouped convolutions
  (``groups = R``): channel block r belongs to net r, BatchNorm statistics are per channel, so the
  result is exactly R separate nets at the cost of one call.
* The R spectral MLPs are batched the same way with per-net weight tensors (``torch.baddbmm``).
* Hourglass level k (k = 0 … depth−1): ``conv k×k → AvgPool(2) → BN → LeakyReLU(0.2) → conv k×k →
  BN → LReLU → [deeper levels] → upsample``; the optional skip branch is a 1×1 conv; after
  concatenation ``BN → conv k×k → BN → LReLU → conv 1×1 → BN → LReLU``; the output head is a 1×1
  conv without sigmoid. Reflection padding everywhere. At the levels in ``attention_levels`` a
  CBAM block (channel attention with reduction 16, then spatial attention, residual) acts on the
  concatenated features before the decoder conv, as in the official ``skip`` network (levels 2
  and 3 of six). The spatial-attention kernel is 7×7 (the original CBAM's; the official code's
  larger kernel cannot be reflection-padded on the small coarse levels).
* Any H, W (not only square, not only powers of two): upsampling targets the skip branch's size.
  ``depth`` is capped so the coarsest level keeps at least 4×4 pixels (BatchNorm with batch 1
  needs more than one value per channel), and kernels shrink where reflection padding would not fit.
* Upsampling is bilinear as in the paper (``upsample="bilinear"``); ``upsample="nearest"`` is the
  other mode of the original Deep Image Prior hourglass. Nearest upsampling keeps edges sharper but
  also fits noise faster (see :class:`~diffrecon.recon.dds2m.DDS2M`).

The paper's widths (down/up ``[16, 32, 64, 128, 128, 128]``, skip ``[0, 0, 4, 4, 4, 4]``, kernels
``[7, 7, 5, 5, 3, 3]``, MLP hidden ``[128, 256, 256, 128]``, R = 10) are :data:`PAPER`; a 256-pixel
cube uses all six levels. :data:`LITE` is a narrower variant for CPU runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InputDataError

Tensor = torch.Tensor

__all__ = ["VS2MConfig", "VS2M", "PAPER", "LITE"]


@dataclass(frozen=True)
class VS2MConfig:
    """Architecture of :class:`VS2M` (per spatial net; every list is indexed by level)."""

    rank: int = 10
    channels: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    skip_channels: tuple[int, ...] = (0, 0, 4, 4, 4, 4)
    kernels: tuple[int, ...] = (7, 7, 5, 5, 3, 3)
    attention_levels: tuple[int, ...] = (2, 3)
    mlp_hidden: tuple[int, ...] = (128, 256, 256, 128)
    depth: int | None = None  # None: as many levels as the lists hold and the image allows
    negative_slope: float = 0.2
    input_scale: float = 1.0  # inputs ~ U(-scale/2, scale/2) as in the paper (scale 1)
    upsample: str = "bilinear"  # decoder upsampling: "bilinear" (paper) or "nearest" (DIP's other mode)

    def replace(self, **kw) -> VS2MConfig:
        d = asdict(self)
        d.update(kw)
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return VS2MConfig(**d)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


PAPER = VS2MConfig()
"""The published architecture (R = 10, six levels on 256-pixel cubes)."""

LITE = VS2MConfig(
    channels=(8, 16, 32, 32),
    skip_channels=(0, 0, 4, 4),
    kernels=(3, 3, 3, 3),
    attention_levels=(2,),
    mlp_hidden=(64, 128, 64),
)
"""A narrower variant with 3×3 kernels for CPU runs on small cubes (≈10× cheaper per step)."""


def usable_depth(height: int, width: int, requested: int) -> int:
    """Largest depth ≤ ``requested`` whose coarsest level is at least 4×4 pixels (at least 1)."""
    d = 0
    h, w = height, width
    while d < requested and min(h // 2, w // 2) >= 4:
        h, w, d = h // 2, w // 2, d + 1
    return max(d, 1)


class _GConv(nn.Module):
    """R independent k×k convolutions (groups = R) with reflection padding that fits the image."""

    def __init__(self, groups: int, cin: int, cout: int, k: int, bias: bool = True):
        super().__init__()
        self.k = k
        self.conv = nn.Conv2d(groups * cin, groups * cout, k, padding=0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        p = self.k // 2
        if p == 0:
            return self.conv(x)
        mode = "reflect" if p < min(x.shape[-2:]) else "replicate"
        return self.conv(F.pad(x, (p, p, p, p), mode=mode))


def _bn_act(groups: int, c: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(groups * c), nn.LeakyReLU(slope))


def _group_cat(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """Concatenate channel blocks per group: (N, R·ca, H, W), (N, R·cb, H, W) → (N, R·(ca+cb), H, W)."""
    n, _, h, w = a.shape
    a = a.view(n, groups, -1, h, w)
    b = b.view(n, groups, -1, h, w)
    return torch.cat([a, b], dim=2).view(n, -1, h, w)


class _GCBAM(nn.Module):
    """Grouped CBAM: channel attention (avg & max pooled, shared 2-layer MLP, reduction 16) then
    spatial attention (channel-mean & channel-max maps → 7×7 conv → sigmoid), added back residually."""

    def __init__(self, groups: int, c: int, reduction: int = 16):
        super().__init__()
        self.groups = groups
        hidden = max(1, c // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(groups * c, groups * hidden, 1, groups=groups, bias=False),
            nn.ReLU(),
            nn.Conv2d(groups * hidden, groups * c, 1, groups=groups, bias=False),
        )
        self.spatial = _GConv(groups, 2, 1, 7, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ca = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        y = x * ca
        yg = y.view(n, self.groups, -1, h, w)
        maps = torch.stack([yg.mean(2), yg.amax(2)], dim=2).view(n, 2 * self.groups, h, w)
        sa = torch.sigmoid(self.spatial(maps))  # (n, R, h, w)
        y = (yg * sa.unsqueeze(2)).view(n, -1, h, w)
        return x + y


class _Level(nn.Module):
    """One hourglass level (encoder, deeper levels, decoder, optional skip branch)."""

    def __init__(self, cfg: VS2MConfig, level: int, depth: int, cin: int, groups: int):
        super().__init__()
        c, k, cs = cfg.channels[level], cfg.kernels[level], cfg.skip_channels[level]
        slope = cfg.negative_slope
        self.groups = groups
        self.upsample = cfg.upsample
        self.skip = nn.Sequential(_GConv(groups, cin, cs, 1), *_bn_act(groups, cs, slope)) if cs > 0 else None
        self.down = nn.Sequential(
            _GConv(groups, cin, c, k),
            nn.AvgPool2d(2),
            *_bn_act(groups, c, slope),
            _GConv(groups, c, c, k),
            *_bn_act(groups, c, slope),
        )
        self.deeper = _Level(cfg, level + 1, depth, c, groups) if level + 1 < depth else None
        c_up_in = cfg.channels[level + 1] if self.deeper is not None else c
        self.merge_bn = nn.BatchNorm2d(groups * (cs + c_up_in))
        self.attention = _GCBAM(groups, cs + c_up_in) if level in cfg.attention_levels else None
        self.up = nn.Sequential(
            _GConv(groups, cs + c_up_in, c, k),
            *_bn_act(groups, c, slope),
            _GConv(groups, c, c, 1),
            *_bn_act(groups, c, slope),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.down(x)
        if self.deeper is not None:
            h = self.deeper(h)
        size = tuple(x.shape[-2:])
        if self.upsample == "nearest":
            h = F.interpolate(h, size=size, mode="nearest")
        else:
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        if self.skip is not None:
            h = _group_cat(self.skip(x), h, self.groups)
        h = self.merge_bn(h)
        if self.attention is not None:
            h = self.attention(h)
        return self.up(h)


class VS2M(nn.Module):
    """Rank-R spatio-spectral generator ``X = Σ_r S_r ⊗ E_r`` (see the module docstring).

    Args:
        height: cube height H (any positive size; ≥ 8 recommended).
        width: cube width W (≥ 8 recommended).
        bands: band count B.
        config: :class:`VS2MConfig` (:data:`PAPER` by default; :data:`LITE` for CPU); keyword
            overrides such as ``rank=6`` or ``depth=3`` may be given directly.
        generator: seeds the fixed network inputs (weights use the global torch RNG; seed it, or use
            :func:`torch.manual_seed`, for reproducibility — :class:`~diffrecon.recon.dds2m.DDS2M` does).

    ``forward()`` takes no input and returns the cube ``(H, W, B)``; ``factors()`` returns
    ``(S, E)`` of shapes ``(R, H, W)`` and ``(R, B)``.

    Example::

        >>> net = VS2M(32, 24, 7, config=LITE, rank=3)
        >>> net().shape
        torch.Size([32, 24, 7])
    """

    def __init__(
        self,
        height: int,
        width: int,
        bands: int,
        config: VS2MConfig = PAPER,
        generator: torch.Generator | None = None,
        **overrides,
    ):
        super().__init__()
        cfg = config.replace(**overrides) if overrides else config
        if min(height, width, bands) < 1:
            raise InputDataError(f"VS2M: expected positive cube sizes, found {(height, width, bands)}")
        if cfg.rank < 1:
            raise InputDataError(f"VS2M: rank must be >= 1, found {cfg.rank}")
        if cfg.upsample not in ("bilinear", "nearest"):
            raise InputDataError(f"VS2M: upsample must be 'bilinear' or 'nearest', found {cfg.upsample!r}")
        n_lists = min(len(cfg.channels), len(cfg.skip_channels), len(cfg.kernels))
        requested = n_lists if cfg.depth is None else min(int(cfg.depth), n_lists)
        if requested < 1:
            raise InputDataError(f"VS2M: depth must be >= 1, found {cfg.depth}")
        self.depth = usable_depth(height, width, requested)
        if min(height, width) < 8:
            raise InputDataError(f"VS2M: the spatial nets need at least 8x8 pixels, found {height}x{width}")
        self.config = cfg
        self.shape = (int(height), int(width), int(bands))
        self.channels_last = False
        r = cfg.rank
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.register_buffer(
            "spatial_input", (torch.rand(1, 1, height, width, generator=g) - 0.5) * cfg.input_scale
        )
        self.register_buffer("spectral_input", (torch.rand(1, bands, generator=g) - 0.5) * cfg.input_scale)
        # R spatial nets: one shared noise image, replicated into every group's input channel
        self.body = _Level(cfg, 0, self.depth, 1, r)
        self.head = nn.Conv2d(r * cfg.channels[0], r, 1, groups=r)
        # R spectral MLPs: bands -> hidden... -> bands, weights (R, in, out)
        sizes = [bands, *cfg.mlp_hidden, bands]
        self.mlp_w = nn.ParameterList()
        self.mlp_b = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=False):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default initialisation, per net
            self.mlp_w.append(nn.Parameter(torch.empty(r, a, b).uniform_(-bound, bound)))
            self.mlp_b.append(nn.Parameter(torch.empty(r, 1, b).uniform_(-bound, bound)))
        self.use_channels_last(True)

    @property
    def rank(self) -> int:
        return self.config.rank

    def spatial(self) -> Tensor:
        """Spatial maps ``S`` of shape ``(R, H, W)``."""
        x = self.spatial_input.expand(1, self.rank, *self.shape[:2])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.body(x))[0]

    def use_channels_last(self, enabled: bool = True) -> VS2M:
        """Run the spatial nets in channels-last layout (2–3× faster grouped convolutions on CPU)."""
        self.channels_last = bool(enabled)
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    def spectral(self) -> Tensor:
        """Spectral signatures ``E`` of shape ``(R, B)``: B → 128 (ReLU6) → 256 → 256 → 128 (ReLU) → B
        for the paper's widths (hidden activations ReLU6 after the first layer, ReLU after the others)."""
        h = self.spectral_input.expand(self.rank, 1, -1)
        n = len(self.mlp_w)
        for i, (w, b) in enumerate(zip(self.mlp_w, self.mlp_b, strict=False)):
            h = torch.baddbmm(b, h, w)
            if i < n - 1:
                h = F.relu6(h) if i == 0 else F.relu(h)
        return h[:, 0, :]

    def factors(self) -> tuple[Tensor, Tensor]:
        return self.spatial(), self.spectral()

    def forward(self) -> Tensor:
        s, e = self.factors()
        return torch.einsum("rhw,rb->hwb", s, e)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
