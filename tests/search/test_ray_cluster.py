"""Joining a Ray cluster (prunetune.search.ray_cluster.init_ray): an address nobody listens on or
that is no HOST:PORT is one clear error at once (ray.init would retry for minutes).
(Ray started and joined for real: tests/search/test_ray_runner.py.)"""

from __future__ import annotations

import socket
import time

import pytest

from prunetune.config import SearchSettings
from prunetune.errors import PrunetuneError
from prunetune.search.ray_cluster import init_ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["head-node", "ray://:6379", "h:port"])
def test_an_address_that_is_no_host_and_port_is_refused(address):
    with pytest.raises(PrunetuneError, match="--address must be auto or HOST:PORT"):
        init_ray(SearchSettings.from_flat(backend="ray", address=address))


def test_an_address_nobody_listens_on_is_one_error_at_once():
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(PrunetuneError, match=f"no Ray cluster at {address}"):
        init_ray(SearchSettings.from_flat(backend="ray", address=address))
    assert time.monotonic() - start < 5
