"""A Ray trial's side (prunetune.search.ray_worker): weights sent to the driver, or dropped with
the reason when too large. (Trials on a real Ray: tests/search/test_ray_runner.py.)"""

from __future__ import annotations

from prunetune.search.ray_worker import ship_weights
from tests.search.studies import record


class Sink:
    """Stands in for the driver's WeightsSink actor handle, whose `put.remote` the worker calls
    (never reached in these cases: the file is above the limit, or there is none)."""

    class put:  # noqa: N801 - the actor method's name
        @staticmethod
        def remote(name: str, data: bytes):
            raise AssertionError("nothing may be shipped")


def test_weights_above_the_limit_are_dropped_with_the_reason_and_the_file_removed(tmp_path):
    rec = record(3)
    rec.weights = str(tmp_path / "trial_3.pt")
    (tmp_path / "trial_3.pt").write_bytes(b"x" * 3 * 2**20)
    ship_weights(rec, Sink, limit=2**20)
    assert rec.weights is None and not (tmp_path / "trial_3.pt").exists()
    assert (
        rec.reason == "weights not kept: 3 MiB is above the 1 MiB a Ray trial ships to the driver"
    )


def test_a_trial_without_weights_ships_nothing():
    rec = record(3)
    rec.weights = None
    ship_weights(rec, Sink)
    assert rec.weights is None
