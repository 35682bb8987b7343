"""The study database's advisory lock (prunetune.search.db_lock): which URLs are PostgreSQL and the
lock key. (The lock itself on a real PostgreSQL server: tests/test_cluster.py.)"""

from __future__ import annotations

import pytest

from prunetune.search.db_lock import is_postgres, lock_key


@pytest.mark.parametrize(
    "url, postgres",
    [
        ("postgresql://u@h/db", True),
        ("postgresql+psycopg://u@h/db", True),
        ("postgres://h/db", True),
        ("sqlite:///mlruns/optuna.db", False),
        ("mysql://h/db", False),
        ("postgresqlx://h/db", False),
    ],
)
def test_postgres_urls_are_told_by_their_scheme(url, postgres):
    assert is_postgres(url) is postgres


def test_the_lock_key_is_a_stable_signed_64_bit_integer_per_parts():
    key = lock_key("study", "budget")
    assert key == lock_key("study", "budget") and -(2**63) <= key < 2**63
    assert key != lock_key("study", "budget2") and key != lock_key("studybudget")
