"""Reconstruction filters for filtered back projection (ramp and its apodised variants).

The ideal FBP filter is the ramp |ω|. Sampled naively in frequency it has the value 0 at ω = 0,
which throws away the DC term that the finite detector needs and gives a global offset
("cupping"). Instead we start from the *band-limited spatial* ramp kernel of Kak & Slaney (Principles
of Computerized Tomographic Imaging, eq. 3.61), for unit bin spacing

    h[0] = 1/4,   h[n] = 0 for even n ≠ 0,   h[n] = −1/(π² n²) for odd n,

zero-pad the detector axis to P = max(64, 2^⌈log₂(2·n_det)⌉) so the circular convolution equals the
linear one on the detector, and take H = Re FFT(h). H(0) = Σ h > 0 carries the correct DC gain.
Apodising windows multiply H with ω ∈ [0, 1] the frequency as a fraction of Nyquist and
c ∈ (0, 1] the ``frequency_cutoff`` (ω' = ω / c; everything above ω' = 1 is zeroed):

    ramp         1
    shepp-logan  sinc(ω'/2) = sin(πω'/2) / (πω'/2)
    cosine       cos(πω'/2)
    hann         (1 + cos(πω')) / 2

For bin spacing τ the continuous kernel is h(nτ) = h[n]/τ² and the convolution integral picks up a
factor τ, so filtered data are (1/τ)·(p ⊛ h); :func:`filter_projections` applies that factor.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputDataError

Tensor = torch.Tensor

FILTERS = ("ramp", "shepp-logan", "cosine", "hann")
_ALIASES = {"ram-lak": "ramp", "ramlak": "ramp", "shepp_logan": "shepp-logan", "sheplogan": "shepp-logan",
            "hanning": "hann", "cos": "cosine"}


def check_filter(name: str) -> str:
    """Canonical filter name; raises :class:`InputDataError` listing the valid names otherwise."""
    key = str(name).lower().strip() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in FILTERS:
        raise InputDataError(f"filter: expected one of {list(FILTERS)}, found {name!r}")
    return key


def padded_length(n_detectors: int) -> int:
    """FFT length used for filtering: max(64, smallest power of two ≥ 2·n_detectors)."""
    return max(64, 1 << int(math.ceil(math.log2(max(2 * int(n_detectors), 1)))))


def frequency_response(
    n_detectors: int,
    filter: str = "ramp",
    *,
    frequency_cutoff: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> Tensor:
    """Frequency response H[k] of the FBP filter for unit bin spacing, shape ``(padded_length(n),)``.

    Ordered like ``torch.fft.fft`` output (k = 0 first). See the module docstring for the formula.
    """
    name = check_filter(filter)
    cutoff = float(frequency_cutoff)
    if not (0.0 < cutoff <= 1.0) or not math.isfinite(cutoff):
        raise InputDataError(f"frequency_cutoff: expected a number in (0, 1] (fraction of Nyquist), found "
                             f"{frequency_cutoff!r}")
    size = padded_length(n_detectors)
    n = torch.arange(size, dtype=torch.float64)
    n = torch.where(n < size // 2, n, n - size)  # circular offsets −P/2 … P/2 − 1
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 0.25
    odd = (n.remainder(2) == 1)
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    response = torch.fft.fft(h).real
    omega = (torch.fft.fftfreq(size, dtype=torch.float64).abs() * 2.0) / cutoff  # ω' (1 = cutoff)
    if name == "shepp-logan":
        window = torch.sinc(omega / 2.0)
    elif name == "cosine":
        window = torch.cos(0.5 * math.pi * omega)
    elif name == "hann":
        window = 0.5 * (1.0 + torch.cos(math.pi * omega))
    else:
        window = torch.ones_like(omega)
    window = torch.where(omega <= 1.0, window, torch.zeros_like(window))
    return (response * window).to(dtype=dtype, device=device)


def filter_projections(
    data: Tensor,
    filter: str = "ramp",
    *,
    detector_spacing: float = 1.0,
    frequency_cutoff: float = 1.0,
) -> Tensor:
    """Convolve every line of ``data`` along its last axis with the FBP filter.

    ``data`` has shape ``(..., n_detectors)`` with bins ``detector_spacing`` apart (same length unit
    as the image pixels). Returns the same shape: (1/τ)·(p ⊛ h) computed by zero-padded FFT, i.e. a
    discretisation of the continuous ramp-filtered projection in units of 1/length.
    """
    n = data.shape[-1]
    size = padded_length(n)
    real_dtype = torch.float64 if data.dtype == torch.float64 else torch.float32
    resp = frequency_response(n, filter, frequency_cutoff=frequency_cutoff, dtype=real_dtype,
                              device=data.device)
    spec = torch.fft.rfft(data.to(real_dtype), n=size, dim=-1)
    out = torch.fft.irfft(spec * resp[: size // 2 + 1], n=size, dim=-1)[..., :n]
    return out / float(detector_spacing)
