"""jobs: a lease number taken by every claim, so that only the worker holding it writes (fencing)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("training_jobs", "prediction_jobs")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("lease", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease")
