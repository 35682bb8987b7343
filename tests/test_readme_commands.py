"""Every `prunetune ...` command in README.md's code blocks parses, and the ones that read the
quickstart's result (models, datasets, pareto, export) succeed on a tiny stand-in for it: a
tiny_cnn-on-digits study under the quickstart's study name. Accuracy thresholds of --select rules
are lowered to 0.3 (the tiny model's front does not reach mnist_net's 95 %); nothing else
changes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from prunetune.cli import build_parser
from tests.helpers import FAST, run_cli

README = Path(__file__).resolve().parent.parent / "README.md"
RUN_ON_RESULT = ("models", "datasets", "pareto", "export")
PLACEHOLDER_HOSTS = (
    "DBHOST",
    "TRACKHOST",
    "HEAD_IP",
)  # the cluster section's templates: parsed only


def readme_commands() -> list[str]:
    """The `prunetune` command lines of README.md's ```bash blocks (continuation lines joined),
    comments and `> file` cut off."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    out = []
    for line in (
        ln.strip() for block in blocks for ln in re.sub(r"\\\n\s*", " ", block).splitlines()
    ):
        if line.startswith("prunetune "):
            line = re.split(r"\s+#\s", line, maxsplit=1)[0]
            out.append(line.split(" > ")[0].strip())
    return out


def test_the_readme_shows_the_commands_this_test_runs():
    cmds = readme_commands()
    assert len(cmds) >= 10 and any("--int8" in c for c in cmds)
    assert {shlex.split(c)[1] for c in cmds} >= set(RUN_ON_RESULT)


@pytest.mark.parametrize("cmd", readme_commands())
def test_every_readme_command_parses(cmd):
    build_parser().parse_args(
        shlex.split(cmd)[1:]
    )  # argparse exits (code 2) on anything it rejects


@pytest.mark.slow
def test_readme_commands_run_on_the_quickstarts_result(isolated):
    # the per-group search: its warm start has an 8-bit trial, which the README's --int8 line needs
    # (in 4 trials the targets strategy runs only its float baselines)
    made = run_cli(
        ["search", *FAST, "--study", "mnist_net-mnist5k", "--trials", "4", "--strategy", "search"],
        isolated,
    )
    assert made.returncode == 0, made.stderr
    ran = 0
    for cmd in readme_commands():
        args = shlex.split(re.sub(r"accuracy>=0\.\d+", "accuracy>=0.3", cmd))[1:]
        if args[0] not in RUN_ON_RESULT or any(h in cmd for h in PLACEHOLDER_HOSTS):
            continue
        got = run_cli(args, isolated)
        assert got.returncode == 0, f"{cmd}\n{got.stderr[-2000:]}"
        ran += 1
    assert ran >= 5
