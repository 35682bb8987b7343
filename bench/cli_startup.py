"""CLI start-up cost: CPU seconds (user + system, of the child process) of `prunetune --help`,
`prunetune search --help`, an argument error, and, for scale, `python -c "import torch"`.

    python bench/cli_startup.py [--repeats 5] [--out bench/results]

Each command runs --repeats times in a fresh process (`python -m prunetune ...` from the repository,
as the tests run it); CPU time from os.wait4's rusage, so other programs on a shared machine slow
the wall clock but barely the CPU figure. The budget (issue 18) is 0.5 s of CPU for --help and
argument errors: they import neither torch nor optuna nor mlflow (tests/test_first_hour.py checks
the imports, not the time). Writes cli_startup.md/.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import _common

COMMANDS = {
    "prunetune --help": ["-m", "prunetune", "--help"],
    "prunetune search --help": ["-m", "prunetune", "search", "--help"],
    "prunetune search --trials x (argument error)": ["-m", "prunetune", "search", "--trials", "x"],
    'python -c "import torch" (for scale)': ["-c", "import torch"],
}


def cpu_seconds(args: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `python ARGS` run from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(_common.REPO)}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=_common.REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=_common.Path, default=None)
    a = ap.parse_args()
    facts = _common.machine_facts()
    rows, data = [], {}
    for name, args in COMMANDS.items():
        runs = [cpu_seconds(args) for _ in range(a.repeats)]
        cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
        data[name] = {"cpu_s": cpu, "wall_s": wall}
        rows.append(
            [f"`{name}`", _common.ms(cpu, ".2f"), f"{min(cpu):.2f}", _common.ms(wall, ".2f")]
        )
    facts = _common.finish_facts(facts)
    md = [
        "# CLI start-up: CPU seconds per command",
        "",
        f"Command: `{_common.command('cli_startup.py', sys.argv[1:])}`",
        "",
        *_common.table(["command", "CPU s (mean ± sd, min..max)", "CPU s min", "wall s"], rows),
        "",
        "Budget: < 0.5 s of CPU for `--help` and argument errors (they import neither torch, "
        "optuna nor mlflow). Wall time depends on the machine's load; CPU time much less.",
        "",
        _common.machine_line(facts, "one process at a time"),
    ]
    _common.write("cli_startup", "\n".join(md) + "\n", {"facts": facts, "runs": data}, a.out)


if __name__ == "__main__":
    _common.ensure_env()
    main()
