"""Start-up settings for training speed, applied by the program itself before torch loads: glibc
malloc's (below) and OpenMP's wait policy (`passive_openmp`).

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
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
# (mallopt parameter, value, the environment variable with the same effect, its value). mallopt
# takes an int, so the trim threshold is the largest int; the variable allows more.
SETTINGS = (
    (M_MMAP_MAX, 0, "MALLOC_MMAP_MAX_", "0"),
    (M_TRIM_THRESHOLD, 2**31 - 1, "MALLOC_TRIM_THRESHOLD_", "1000000000000"),
)


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


OPENMP_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")


def passive_openmp() -> bool:
    """Make OpenMP threads sleep, not spin, while they wait (OMP_WAIT_POLICY=PASSIVE: GNU OpenMP's
    spin count 0 instead of 300,000), for this process and its children, unless the user set the
    variable. Spinning threads burn a core another process (a second search, the user's other
    work) needs, and a spinning thread that is descheduled stalls every op at its barrier: on 2
    cores beside one busy process a 2-thread training step took 37 ms passive vs 52 ms spinning,
    beside a second trainer 36 ms vs 160-190 ms. OpenMP reads the variable once, when torch
    loads it: returns True when this process will run passive (set here or by the user, and
    torch not imported yet), False otherwise. Never raises."""
    name, value = OPENMP_WAIT
    os.environ.setdefault(name, value)
    return os.environ[name].strip().upper() == value and "torch" not in sys.modules
