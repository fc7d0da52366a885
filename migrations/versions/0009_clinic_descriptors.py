"""clinics: whether a clinic keeps DICOM descriptions (StudyDescription, ...) instead of their removal

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clinics", sa.Column("keep_descriptors", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("clinics") as batch:
        batch.drop_column("keep_descriptors")
