"""Centred, orthonormal FFTs for MRI (private helpers of :mod:`~diffrecon.operators.mri` and
:mod:`~diffrecon.operators.coils`).

Convention (the one fastMRI and sigpy use): the k-space centre (DC) sits at index ``n // 2`` of every
transformed axis, and the image centre at index ``n // 2`` too::

    fftc(x)  = fftshift(fft(ifftshift(x)))   with norm="ortho" (unitary)
    ifftc(k) = fftshift(ifft(ifftshift(k)))  with norm="ortho" (its inverse and adjoint)

For an axis of **even** length n the two shifts are a modulation: with c[j] = (−1)^j and s = (−1)^(n/2),
``fftc(x) = s·c ⊙ fft(c ⊙ x)`` (and the same for ``ifftc``). Operators fold c into their coil maps and
s·c into their sampling mask, so an even-sized centred FFT costs exactly one plain FFT and no extra
pass over memory. Odd lengths fall back to explicit rolls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def _dims(x: Tensor, ndim: int) -> tuple[int, ...]:
    return tuple(range(x.ndim - ndim, x.ndim))


def fftc(x: Tensor, ndim: int = 2) -> Tensor:
    """Centred orthonormal FFT over the trailing ``ndim`` axes of a complex tensor."""
    dims = _dims(x, ndim)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def ifftc(k: Tensor, ndim: int = 2) -> Tensor:
    """Centred orthonormal inverse FFT over the trailing ``ndim`` axes (the adjoint of :func:`fftc`)."""
    dims = _dims(k, ndim)
    k = torch.fft.ifftshift(k, dim=dims)
    k = torch.fft.ifftn(k, dim=dims, norm="ortho")
    return torch.fft.fftshift(k, dim=dims)


def all_even(shape: Sequence[int]) -> bool:
    return all(int(n) % 2 == 0 for n in shape)


def checkerboard(shape: Sequence[int], dtype=torch.float32, device=None) -> Tensor:
    """c[j₁,…,j_d] = Π (−1)^{j_i} over the given (trailing) shape."""
    out = torch.ones((), dtype=dtype, device=device)
    for i, n in enumerate(shape):
        v = 1.0 - 2.0 * (torch.arange(int(n), device=device) % 2).to(dtype)
        view = [1] * len(shape)
        view[i] = int(n)
        out = out * v.view(view)
    return out


def shift_sign(shape: Sequence[int]) -> float:
    """s = Π (−1)^{n_i/2} for even lengths n_i (the global sign of the modulation identity)."""
    return -1.0 if sum(int(n) // 2 for n in shape) % 2 else 1.0
