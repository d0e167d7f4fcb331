"""Run-time measurements shared by the library (``diffrecon.demo``) and the command line: wall-clock
timing that waits for queued CUDA work, and the process's peak resident memory."""

from __future__ import annotations

import resource
import time

import torch

__all__ = ["Timer", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``; synchronises CUDA on entry and exit (when present)
    so asynchronous kernels are counted in the block that launched them."""

    seconds: float = 0.0

    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
