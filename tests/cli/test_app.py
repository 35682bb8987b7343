"""prunetune.cli.app: one subcommand per COMMANDS entry; a user error is one line and exit 2."""

from __future__ import annotations

import pytest

from prunetune.cli import build_parser, main
from prunetune.cli.app import COMMANDS, EXIT_USER_ERROR


def test_every_command_is_a_subcommand_with_its_handler():
    parser = build_parser()
    for name, (_, _, handler) in COMMANDS.items():
        args = parser.parse_args([name, "--out", "x"] if name in ("export",) else [name])
        assert args.fn is handler and args.command == name


def test_a_user_error_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--trials", "0"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "prunetune: error: trials must be >= 1, got 0\n"


def test_a_bad_flag_is_argparse_s_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["search", "--trials", "many"])
    assert info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err.count("\n") == 1
