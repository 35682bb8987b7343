"""The user-facing error types (prunetune.errors): what each is also, and one-line messages."""

from __future__ import annotations

import errno
import sqlite3

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from prunetune.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    EnvironmentFault,
    PrunetuneError,
    UnknownNameError,
    disk_full,
    read_only,
)


def test_an_unknown_name_lists_the_known_ones_sorted_without_keyerror_quotes():
    err = UnknownNameError("model", "resnet9", ("vgg", "mnist_net", "alexnet"))
    assert str(err) == "unknown model 'resnet9'; known: alexnet, mnist_net, vgg"
    assert (err.kind, err.name, err.known) == ("model", "resnet9", ["vgg", "mnist_net", "alexnet"])
    with pytest.raises(KeyError):  # a registry lookup's callers may catch it as a KeyError
        raise err


@pytest.mark.parametrize(
    "cls, also",
    [
        (UnknownNameError, KeyError),
        (ConfigError, ValueError),
        (DataNotFoundError, PrunetuneError),
        (CheckpointError, PrunetuneError),
        (EnvironmentFault, PrunetuneError),
    ],
)
def test_every_error_is_a_prunetune_error_the_cli_reports_in_one_line(cls, also):
    assert issubclass(cls, PrunetuneError) and issubclass(cls, also)


def _mlflow_full_disk() -> Exception:
    """The chain MLflow 3.18 raised when the disk filled as it created its default experiment:
    SQLite's "disk is full" raised while handling "No Experiment with id=0 exists", wrapped."""
    try:
        try:
            try:
                raise MlflowException("No Experiment with id=0 exists")
            except MlflowException:
                raise sqlite3.OperationalError("database or disk is full")  # noqa: B904
        except sqlite3.OperationalError as exc:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, exc) from exc
    except sqlalchemy.exc.OperationalError as exc:
        try:
            raise MlflowException(str(exc)) from exc
        except MlflowException as top:
            return top


def test_a_full_disk_or_a_read_only_store_is_found_anywhere_in_the_chain():
    """The store's creation reported MLflow's "No Experiment with id=0 exists" (exit 2, the user's
    input) when the disk filled: it only looked at the chain's root."""
    assert disk_full(_mlflow_full_disk())
    assert disk_full(OSError(errno.EDQUOT, "quota")) and not disk_full(OSError(errno.EIO, "io"))
    assert not disk_full(MlflowException("No Experiment with id=0 exists"))
    wrapped = RuntimeError("write failed")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system")
    assert read_only(wrapped) and not read_only(_mlflow_full_disk())
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop  # a cycle ends the walk
    assert not disk_full(loop)
