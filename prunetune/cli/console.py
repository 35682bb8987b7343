"""Where the commands write: results on stdout (print), progress and notes on stderr (`log`)."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    """One line on stderr, flushed (progress, notes, warnings)."""
    print(msg, file=sys.stderr, flush=True)
