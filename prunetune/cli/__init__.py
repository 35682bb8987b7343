"""The `prunetune` command line (console script `prunetune = "prunetune.cli:main"`).

Modules: app.py (parser, `main`, the one place that turns errors into one line and an exit code),
settings_flags.py (the search settings as flags, one argument group per part), and the thin
commands: catalog.py (models, datasets, info, space), base_model.py (train, sensitivity),
study.py (search, pareto, export), ui.py (ui); console.py (`log` on stderr)."""

from prunetune.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
