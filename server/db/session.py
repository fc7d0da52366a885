"""Engines and session factories. One place commits: the request handler, or the job function that owns the session."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


@dataclass(frozen=True)
class PoolLimits:
    """Connections kept open, opened beyond those at a peak, and seconds a request waits for one before its
    sqlalchemy TimeoutError (answered 503 by the API)."""

    size: int = 20
    overflow: int = 20
    timeout_s: float = 10.0


def make_engine(url: str, pool: PoolLimits = PoolLimits()) -> Engine:
    sizing = {"pool_size": pool.size, "max_overflow": pool.overflow, "pool_timeout": pool.timeout_s}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sizing)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")  # SQLite ignores foreign keys unless asked
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer (API + worker)
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **sizing)


@lru_cache
def session_factory(url: str, pool: PoolLimits = PoolLimits()) -> sessionmaker[Session]:
    return sessionmaker(make_engine(url, pool), expire_on_commit=False)
