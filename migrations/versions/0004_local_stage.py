"""projects: the local stage's settings

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing projects keep training one-stage models (NULL); new ones get the API's default.
    op.add_column("projects", sa.Column("local_stage", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("projects", "local_stage")
