"""Process memory settings for CPU training.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with fresh mmap calls
and returns them to the kernel on free. A Conv-4 step at 84x84 allocates and frees activations
of ~115 MB each, so every step pays for page faults on hundreds of MB of new zeroed pages:
on the 2-core development machine a quarter of the CPU time of a miniImageNet run went to the
kernel. Serving everything from the heap and keeping freed memory makes the 84x84 step
1.3x-1.7x faster there (`experiments/perf/memory.py`, three runs, e.g. 118 -> 181 images/s);
the price is that the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # mallopt parameters, glibc malloc.h


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of unmapping it; True when it applied.

    A no-op (False) where the C library is not glibc, e.g. macOS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20)))
