"""SIGTERM anywhere in a command (real processes): one line, exit 143, the MLflow parent run
KILLED, no temporary folder left. The signal is sent when the process logs that it entered the
phase under test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest

from tests.helpers import FAST, load_study, run_cli, search_args, wait_for

pytestmark = pytest.mark.slow


class Process:
    """`python -m prunetune ARGS` in `cwd` with its own TMPDIR; stderr collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.tmp = cwd / f"tmp-{len(list(cwd.glob('tmp-*')))}"
        self.tmp.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prunetune", *args],
            cwd=cwd,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **env, "TMPDIR": str(self.tmp)},
        )
        self.err: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.err.extend(self.proc.stderr), daemon=True
        )
        self.reader.start()

    def terminate_after(
        self, line: str, *, temp_folder: bool = False, may_finish: bool = False
    ) -> tuple[int, str]:
        """SIGTERM once stderr has a line containing `line` (and, with `temp_folder`, once a
        folder exists in its TMPDIR); (exit code, stderr). With `may_finish`, a process that
        saw the line and exited 0 before the signal could be sent is no failure (exit code 0)."""

        def ready() -> bool:
            return any(line in x for x in self.err) and (
                not temp_folder or any(p.is_dir() for p in self.tmp.iterdir())
            )

        seen = wait_for(lambda: ready() or self.proc.poll() is not None, 300, step=0.02)
        if may_finish and self.proc.poll() == 0:
            self.reader.join(timeout=10)
            return 0, "".join(self.err)
        assert seen and self.proc.poll() is None, f"never saw {line!r}: {''.join(self.err)[-3000:]}"
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return rc, "".join(self.err)


def assert_one_line(rc: int, err: str, note: str = "") -> None:
    assert rc == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == f"prunetune: interrupted (SIGTERM);{note}".rstrip(
        ";"
    ), err[-3000:]


RESUME = " finished trials are saved. Re-run the same command to resume."


def left_behind(tmp: Path) -> list[str]:
    """What is left in a process's TMPDIR, but for ONNX Runtime's own 51-byte `.ses` file (written
    by every session, interrupted or not)."""
    return [p.name for p in tmp.iterdir() if p.name != ".ses"]


def parents(cwd: Path, study: str) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(
        experiment_names=[study],
        output_format="list",
        filter_string="tags.`prunetune.role` = 'search'",
    )


def test_sigterm_during_base_training(isolated):
    """Used to die by the signal (rc -15, no message)."""
    home = isolated / "home"  # no cached base model: it is trained now
    args = ["search", *FAST, "--base-epochs", "50", "--study", "base", "--trials", "2"]
    rc, err = Process(args, isolated, {"PRUNETUNE_HOME": str(home)}).terminate_after(
        "training base"
    )
    assert_one_line(rc, err, RESUME)
    assert not list(home.rglob("*.pt")), "no half-trained base model cached"
    assert not left_behind(isolated / "tmp-0")


def test_sigterm_at_the_end_of_a_search_and_during_an_export(isolated):
    """End of search (test scoring, MLflow artifacts): the parent run used to stay RUNNING. Export:
    its temporary folders used to stay behind."""
    search = Process(search_args("end", 2), isolated, {})
    rc, err = search.terminate_after(
        "search: no more trials to run", temp_folder=True
    )  # MLflow artifacts
    assert_one_line(rc, err, RESUME)
    assert [(p.info.status, p.data.tags["outcome"]) for p in parents(isolated, "end")] == [
        ("KILLED", "interrupted")
    ]
    assert sum(t.state.name == "COMPLETE" for t in load_study(isolated, "end").trials) == 2  # kept
    assert not left_behind(search.tmp)

    for attempt in range(3):  # a tiny model's export can end before the signal arrives
        export = Process(["export", "--study", "end", "--out", f"out-{attempt}"], isolated, {})
        rc, err = export.terminate_after(
            "next to the base model", temp_folder=True, may_finish=True
        )  # the base's file
        assert not left_behind(export.tmp)
        if rc != 0:
            break
    assert_one_line(rc, err)


def test_a_keyboard_interrupt_that_ended_a_string_exec_does_not_turn_the_exit_into_sigint(tmp_path):
    """CPython remembers a KeyboardInterrupt that ended a string exec, even one handled afterwards,
    and `python -m` then exits by SIGINT (-2, no message) instead of main()'s 130 / 143 (a CI run
    of session 10: SIGTERM during the end-of-search MLflow writes). Here main() is a stand-in
    that handles such an interrupt and returns 143 (installed by a sitecustomize before
    `prunetune.__main__` runs)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import prunetune.cli\n"
        "def main():\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        return 143\n"
        "prunetune.cli.main = main\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([str(tmp_path), root, os.environ.get("PYTHONPATH", "")])
    assert run_cli([], tmp_path, env={"PYTHONPATH": path}).returncode == 143
