"""prunetune.cli.console: notes go to stderr, one line each, results stay alone on stdout."""

from __future__ import annotations

from prunetune.cli.console import log


def test_log_writes_one_line_to_stderr_only(capsys):
    log("training base tiny_cnn")
    out, err = capsys.readouterr()
    assert out == "" and err == "training base tiny_cnn\n"
