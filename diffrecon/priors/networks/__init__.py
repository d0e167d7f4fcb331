"""Network builders by name, so a checkpoint's JSON can rebuild its architecture.

``build_network({"type": "monai.DiffusionModelUNet", "kwargs": {...}})`` returns the module. Only
what MONAI lacks would live in this package; the 2D slice priors use MONAI's ``DiffusionModelUNet``
and the latent priors MONAI's ``AutoencoderKL``.
"""

from __future__ import annotations

from torch import nn

from ...errors import CheckpointError


def _monai_unet(**kw) -> nn.Module:
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(**kw)


def _monai_autoencoderkl(**kw) -> nn.Module:
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(**kw)


def _tiny_conv(**kw) -> nn.Module:
    return TinyDenoiser(**kw)


ARCHITECTURES = {
    "monai.DiffusionModelUNet": _monai_unet,
    "monai.AutoencoderKL": _monai_autoencoderkl,
    "diffrecon.TinyDenoiser": _tiny_conv,
}


def build_network(arch: dict) -> nn.Module:
    """Instantiate ``arch = {"type": name, "kwargs": {...}}``; raises :class:`CheckpointError` for an
    unknown type or arguments the constructor rejects."""
    if not isinstance(arch, dict) or "type" not in arch:
        raise CheckpointError(f"architecture must be a dict with a 'type' key, got {arch!r}")
    typ = arch["type"]
    if typ not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {typ!r}; known: {sorted(ARCHITECTURES)}")
    kw = dict(arch.get("kwargs", {}))
    for k, v in list(kw.items()):
        if isinstance(v, list):
            kw[k] = tuple(v)
    try:
        return ARCHITECTURES[typ](**kw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {typ} with {kw}: {exc}") from exc


def unet_config(
    channels=(32, 64, 128),
    attention_levels=None,
    num_res_blocks=1,
    num_head_channels=32,
    norm_num_groups=16,
    in_channels=1,
    out_channels=1,
) -> dict:
    """Architecture dict for a 2D MONAI ``DiffusionModelUNet`` (attention at the lowest level by default)."""
    channels = list(channels)
    if attention_levels is None:
        attention_levels = [False] * (len(channels) - 1) + [True]
    return {
        "type": "monai.DiffusionModelUNet",
        "kwargs": {
            "spatial_dims": 2,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "attention_levels": list(attention_levels),
            "num_res_blocks": num_res_blocks,
            "num_head_channels": num_head_channels,
            "norm_num_groups": norm_num_groups,
        },
    }


class TinyDenoiser(nn.Module):
    """A few-thousand-parameter conv net with a time embedding, for tests only.

    ``forward(x, t)``: x (B, C, H, W), t (B,) float → (B, C, H, W).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3, time_scale: float = 1e-3):
        super().__init__()
        self.time_scale = float(time_scale)
        self.inp = nn.Conv2d(in_channels, width, 3, padding=1)
        self.temb = nn.Linear(2, width)
        self.body = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)])
        self.out = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x, t):
        import torch

        tt = t.float().view(-1, 1) * self.time_scale
        emb = self.temb(torch.cat([torch.sin(tt), torch.cos(tt)], 1))[:, :, None, None]
        h = torch.nn.functional.silu(self.inp(x) + emb)
        for conv in self.body:
            h = h + torch.nn.functional.silu(conv(h))
        return self.out(h)
