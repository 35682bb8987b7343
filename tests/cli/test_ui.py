"""prunetune.cli.ui: the UI's address is checked before any server starts."""

from __future__ import annotations

import pytest

from prunetune.cli.ui import check_ui_address
from prunetune.errors import PrunetuneError


@pytest.mark.parametrize(
    "host, port, message",
    [
        ("127.0.0.1", 0, "--port must be in 1-65535, got 0"),
        ("127.0.0.1", 70000, "--port must be in 1-65535"),
        ("no-such-host.invalid", 5000, "--host 'no-such-host.invalid' is not an address here"),
    ],
)
def test_a_bad_address_is_one_line(host, port, message):
    with pytest.raises(PrunetuneError, match=message):
        check_ui_address(host, port)
