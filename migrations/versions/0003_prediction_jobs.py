"""prediction jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_jobs",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued", "running", "succeeded", "failed", "cancelled", name="jobstatus", native_enum=False, length=20
            ),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("result_blob", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("celery_task_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["api_keys.id"], name=op.f("fk_prediction_jobs_created_by_api_keys")),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name=op.f("fk_prediction_jobs_model_version_id_model_versions")
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_prediction_jobs_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_jobs")),
    )
    with op.batch_alter_table("prediction_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prediction_jobs_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_prediction_jobs_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prediction_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_prediction_jobs_project_id"))
    op.drop_table("prediction_jobs")
