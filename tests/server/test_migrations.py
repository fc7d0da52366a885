"""The Alembic history applies, reverts and re-applies cleanly, and matches the entities, on both databases."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from server.db.base import Base
from server.migrate import alembic_config, upgrade


def test_upgrade_downgrade_upgrade_and_no_drift(database_url: str) -> None:
    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"the entities differ from the migrations: {diff}"
