"""Errors a user can cause. The CLI turns each into one line on stderr and exit code 2 (1 for an
EnvironmentFault: the machine, not the input, is in the way)."""

from __future__ import annotations


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
