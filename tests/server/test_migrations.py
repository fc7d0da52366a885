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


def test_projects_made_before_0011_keep_their_network(database_url: str) -> None:
    """A project trained before the options has ReLU models without a hidden head layer: it must keep them,
    whatever new projects default to."""
    import uuid
    from datetime import UTC, datetime

    import sqlalchemy as sa

    command.upgrade(alembic_config(database_url), "0010")
    clinics = sa.table(
        "clinics", sa.column("id", sa.Uuid), sa.column("created_at", sa.DateTime), sa.column("name", sa.String)
    )
    projects = sa.table(
        "projects",
        *(sa.column(n, sa.Uuid) for n in ("id", "clinic_id")),
        sa.column("created_at", sa.DateTime),
        *(sa.column(n, sa.String) for n in ("name", "description", "modality", "backbone", "strategy")),
        *(sa.column(n, sa.Integer) for n in ("input_width", "input_height")),
        sa.column("training", sa.JSON),
    )
    clinic, project, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.insert(clinics).values(id=clinic, created_at=now, name="old"))
        conn.execute(
            sa.insert(projects).values(
                id=project, clinic_id=clinic, created_at=now, name="old", description="", modality="cephalometric",
                backbone="hrnet_w18_small", strategy="kamp", input_width=256, input_height=320, training={},
            )
        )  # fmt: skip
    upgrade(database_url)
    with engine.connect() as conn:
        kept, head = conn.execute(sa.text("SELECT backbone_last_relu, head_channels FROM projects")).one()
    engine.dispose()
    assert (kept is True or kept == 1) and head == 0
