"""prunetune.cli.settings_flags: the settings as flags, one argument group per part; flags given
override the --config file, flags not given do not."""

from __future__ import annotations

import re

import pytest

from prunetune.cli import build_parser, main
from prunetune.cli.settings_flags import PART_TITLES, part_from_args, settings_from_args
from prunetune.config import FLAT, BaseRecipe


def test_search_help_lists_the_flags_in_one_group_per_settings_part(capsys):
    """`search --help` shows each part of the settings as an argument group holding exactly the
    flags of that part's flat keys."""
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    starts = [out.index(f"\n{title}:\n") for title in PART_TITLES.values()]
    assert starts == sorted(starts)  # the groups in the order of the parts
    ends = [*starts[1:], out.index("\nafter the search:\n")]
    section = {part: out[a:b] for part, a, b in zip(PART_TITLES, starts, ends)}
    for key, (part, _) in FLAT.items():
        flag = re.compile(r"^  --" + key.replace("_", "-") + r"\b", re.MULTILINE)  # not in a help
        assert [p for p, text in section.items() if flag.search(text)] == [part], key


def test_flags_given_override_the_config_file_and_only_those(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trials: 7\nsampler: nsga2\nbase_lr: 0.02\n")
    args = build_parser().parse_args(["search", "--config", str(f), "--trials", "9"])
    cfg = settings_from_args(args)
    assert cfg.budget.trials == 9 and cfg.plan.sampler == "nsga2" and cfg.base.lr == 0.02


def test_a_part_from_a_command_s_own_flag_names():
    """train's --lr / --epochs / --seed are the BaseRecipe search reads as --base-*."""
    args = build_parser().parse_args(["train", "--lr", "0.01", "--epochs", "2", "--seed", "3"])
    assert part_from_args(args, "base") == BaseRecipe(epochs=2, lr=0.01, seed=3)
    args = build_parser().parse_args(["train", "--base-lr", "0.01"])
    assert part_from_args(args, "base") == BaseRecipe(lr=0.01)
