"""Shared helpers of the benchmark scripts: environment, machine facts, statistics, Markdown.

Not a benchmark itself. Every `bench/NAME.py` imports it (scripts run as `python bench/NAME.py`,
so `bench/` is on sys.path).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}


def ensure_env() -> None:
    """Re-exec the script with glibc kept from unmapping big buffers (the README's setting: the base
    Net's training step is ~2x faster). glibc reads these variables at start-up only."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        env = {**os.environ, **MALLOC_ENV}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def command(script: str, argv: list[str]) -> str:
    """The command line as a user would type it (with PRUNETUNE_HOME when it was set)."""
    prefix = (
        f"PRUNETUNE_HOME={os.environ['PRUNETUNE_HOME']} "
        if os.environ.get("PRUNETUNE_HOME")
        else ""
    )
    return prefix + shlex.join(["python", f"bench/{script}", *argv])


def scratch(name: str, quick: bool) -> Path:
    """A scratch working directory outside the repository (mlruns/ and study files land there)."""
    root = Path(os.environ.get("PRUNETUNE_BENCH_WORK", "/tmp/bench-work"))
    d = root / (f"{name}-quick" if quick else name)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "prunetune"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + (" (prunetune/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_facts() -> dict:
    """The CPU model, the logical CPU count and the vector ISA extensions that matter for GEMMs."""
    cpu, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}),
    }


def machine_facts() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("optuna", "mlflow", "onnxruntime", "torch_pruning"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not listed
            pass
    return {
        **cpu_facts(),
        "versions": versions,
        "git": _git(),
        "load_average_start": list(os.getloadavg()),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "_t0": time.time(),
    }


def finish_facts(facts: dict) -> dict:
    facts["load_average_end"] = list(os.getloadavg())
    facts["wall_s"] = round(time.time() - facts.pop("_t0"), 1)
    return facts


def machine_line(facts: dict, threads: str) -> str:
    v = facts["versions"]

    def load(xs):
        return ", ".join(f"{x:.2f}" for x in xs)

    return (
        f"Machine: {facts['cpu']} ({facts['logical_cpus']} logical CPUs, "
        f"{', '.join(facts['isa'])}), "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f"; git {facts['git']}; {threads}; {facts['date']}; load average (1, 5, 15 min) at start "
        f"{load(facts['load_average_start'])}, at end {load(facts['load_average_end'])} (the 2 "
        f"cores are shared with other engineers' jobs); this bench took {facts['wall_s'] / 60:.1f} "
        "min wall."
    )


def header(title: str, command: str, facts: dict, threads: str, doc: str) -> list[str]:
    """A report's first lines: its title, command, machine line and protocol (the third paragraph
    of the bench's docstring `doc`), each followed by a blank line."""
    protocol = " ".join(doc.split("\n\n")[2].split())
    lines = [f"# {title}", f"Command: `{command}`", machine_line(facts, threads)]
    return [line for text in [*lines, f"Protocol: {protocol}"] for line in (text, "")]


def stats(values: list[float]) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else float("nan"),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "n": len(values),
    }


def ms(values: list[float], fmt: str = ".3f") -> str:
    """mean ± sd (min..max) as text."""
    s = stats(values)
    if s["n"] == 1:
        return f"{s['mean']:{fmt}}"
    return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}} ({s['min']:{fmt}}..{s['max']:{fmt}})"


def write(name: str, md: str, data: dict, out: Path | None = None) -> None:
    out = out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"wrote {out / (name + '.md')} and {out / (name + '.json')}", flush=True)


def table(header: list[str], rows: list[list], align: str | None = None) -> list[str]:
    align = align or "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", align] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows
    ]
