"""Errors a user can cause. The CLI turns each into one line on stderr and exit code 2 (1 for an
EnvironmentFault: the machine, not the input, is in the way)."""

from __future__ import annotations

import errno
from collections.abc import Iterator


class PrunetuneError(Exception):
    """A mistake in the user's input (names, files, values): reported as one clear line."""


class UnknownNameError(PrunetuneError, KeyError):
    """A name that is not in a registry (model, dataset, sampler, objective, importance, ...)."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known))}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataNotFoundError(PrunetuneError):
    """A dataset's files are missing and cannot be downloaded here."""


class CheckpointError(PrunetuneError):
    """A checkpoint or compressed-model file is missing, corrupt, or of another model."""


class ConfigError(PrunetuneError, ValueError):
    """A configuration value (flag, YAML key, ratio, bit-width) is not allowed."""


class EnvironmentFault(PrunetuneError):
    """Something outside the user's input stops the command (a port another program holds, a
    database that became read-only): one line, exit code 1."""


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or any exception in its chain (raised from or while handling), says the disk
    or a quota is full (MLflow 3.18 hides SQLite's under the error its insert was handling)."""
    return any(
        (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
        or "database or disk is full" in str(e)
        for e in _chain(exc)
    )


def read_only(exc: BaseException) -> bool:
    """Whether `exc`, or any exception in its chain, says a file or database is read-only."""
    return any(
        (isinstance(e, OSError) and e.errno == errno.EROFS)
        or "readonly database" in str(e)
        or "read-only file system" in str(e).lower()
        for e in _chain(exc)
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__
