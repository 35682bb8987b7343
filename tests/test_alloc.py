"""prunetune sets glibc's malloc up itself (prunetune.alloc): big blocks from the heap, never
trimmed. Observed with glibc's own counters (mallinfo2) in fresh processes without the variables."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mmapped by default

PROBE = """
import ctypes, json, sys
{setup}
class Info(ctypes.Structure):  # struct mallinfo2 (glibc >= 2.33)
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.malloc.argtypes, libc.free.argtypes = [ctypes.c_size_t], [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc({block})
ctypes.memset(block, 1, {block})
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({{"mmapped": during.hblkhd - before.hblkhd,
                  "heap_kept": after.arena - before.arena}}))
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt/mallinfo2 are glibc's"
)


def _probe(setup: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup, block=BLOCK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_without_the_settings_a_big_block_is_mmapped_and_given_back():
    """The control: what the checks below would see if the settings were not applied."""
    seen = _probe("")
    assert seen["mmapped"] >= BLOCK and seen["heap_kept"] < 0.5 * BLOCK


ALONE = (
    "import importlib.util as u; "  # prunetune.alloc without the package (and torch)
    f"s = u.spec_from_file_location('alloc', {str(ROOT / 'prunetune' / 'alloc.py')!r}); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); assert m.tune_malloc()"
)


@glibc_only
@pytest.mark.parametrize(
    "setup",
    [ALONE, "from prunetune.cli import main; main(['datasets'])"],
    ids=["tune_malloc", "main"],
)
def test_after_start_up_big_blocks_come_from_the_heap_and_stay(setup):
    seen = _probe(setup)
    assert (
        seen["mmapped"] == 0 and seen["heap_kept"] >= 0.9 * BLOCK
    )  # (free space at the top is reused)


def test_child_processes_get_the_settings_and_the_users_win(monkeypatch):
    from prunetune.alloc import tune_malloc

    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    tune_malloc()
    assert os.environ["MALLOC_MMAP_MAX_"] == "0" and os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"


# -- OpenMP's wait policy (prunetune.alloc.passive_openmp) -------------------------------------
def _spin_count(setup: str) -> int:
    """GNU OpenMP's spin count in a fresh process that runs `setup` and then loads torch, as the
    OpenMP runtime itself reports it (OMP_DISPLAY_ENV=VERBOSE): 0 means waiting threads sleep."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_", "GOMP_"))}
    env |= {"PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE"}
    code = f"{setup}\nimport torch\ntorch.ones(8).sum()"
    err = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", err)
    if found is None:
        pytest.skip("torch's OpenMP runtime is not GNU OpenMP (no GOMP_SPINCOUNT in its display)")
    return int(found.group(1))


def test_without_the_setting_openmp_threads_spin():
    """The control: what the check below would see if prunetune did not set the policy."""
    assert _spin_count("") > 0


def test_after_start_up_openmp_threads_sleep_while_they_wait():
    assert _spin_count("from prunetune.cli import main; main(['datasets'])") == 0


def test_the_users_wait_policy_wins():
    setup = (
        "import os; os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\n"
        "from prunetune.cli import main; main(['datasets'])"
    )
    assert _spin_count(setup) > 0


def test_child_processes_get_the_wait_policy(monkeypatch):
    from prunetune.alloc import passive_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
