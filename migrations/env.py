"""Alembic environment bound to the service's metadata; the URL comes from KAMP_ settings or the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from server.db import entities  # noqa: F401  (registers the tables on Base.metadata)
from server.db.base import Base
from server.settings import get_settings

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does that for us.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
