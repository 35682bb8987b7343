"""glibc malloc settings for training speed, applied by the program itself at start-up.

By default glibc serves large blocks (PyTorch's activation and gradient buffers) with mmap(2) and
returns freed memory to the kernel, so every training step maps, zero-fills and unmaps the same
buffers again. Keeping them in the heap (`M_MMAP_MAX` = 0) and never trimming it
(`M_TRIM_THRESHOLD` at its maximum) makes base-model training steps about 2.2x faster here; this is
what scripts/demo.sh did with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000. The cost:
memory freed by a trial stays reserved by the process for the next one.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
# (mallopt parameter, value, the environment variable with the same effect, its value). mallopt
# takes an int, so the trim threshold is the largest int; the variable allows more.
SETTINGS = ((M_MMAP_MAX, 0, "MALLOC_MMAP_MAX_", "0"),
            (M_TRIM_THRESHOLD, 2**31 - 1, "MALLOC_TRIM_THRESHOLD_", "1000000000000"))


def _glibc_mallopt():
    """glibc's mallopt(3), or None outside glibc (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - AttributeError outside glibc
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def tune_malloc() -> bool:
    """Apply the settings above to this process with mallopt, each unless the user set its
    environment variable (glibc applied the user's value at start-up then), and set the variables
    for child processes (Ray workers, subprocesses). Returns True when both settings are in effect
    (glibc), False where mallopt is missing or refused one (nothing else happens). Never raises."""
    mallopt = _glibc_mallopt()
    ok = mallopt is not None
    for param, value, name, env_value in SETTINGS:
        if name in os.environ:
            continue
        os.environ[name] = env_value
        ok = ok and bool(mallopt(param, value))
    return ok
