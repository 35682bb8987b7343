"""A lock held in the study's database, for drivers on different machines that share a study.

A file lock only serializes processes of one machine. When the study lives on PostgreSQL, the
budget check ("count the finished trials, then ask for one more") is serialized by a session-level
advisory lock (`pg_advisory_lock`) in that database instead, so drivers on several machines stop
exactly at the budget. Other databases return None: the caller falls back to its file lock
(MySQL's GET_LOCK would work the same way; it is not wired up or tested here).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key from `parts` (PostgreSQL's bigint)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(url: str, *parts: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock `lock_key(*parts)` on database `url` for the block (one
    connection of its own, released with the lock even if the block raises)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    key = lock_key(*parts)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
