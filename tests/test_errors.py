"""The user-facing error types (prunetune.errors): what each is also, and one-line messages."""

from __future__ import annotations

import pytest

from prunetune.errors import (
    CheckpointError,
    ConfigError,
    DataNotFoundError,
    EnvironmentFault,
    PrunetuneError,
    UnknownNameError,
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
