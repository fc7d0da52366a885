"""studies: a keyed digest of the uploaded file's name instead of the name

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # File names are identifiers: the stored ones are dropped, not converted (the migration has no access to the
    # service's pseudonym key). Studies uploaded before cannot be matched by name in an annotation import.
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("name_key", sa.String(64), nullable=True))
        batch.create_index("ix_studies_name_key", ["name_key"])
        batch.drop_column("filename")


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("filename", sa.String(255), nullable=True))
        batch.drop_index("ix_studies_name_key")
        batch.drop_column("name_key")
