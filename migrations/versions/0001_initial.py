"""clinics, keys, projects, landmark sets, studies, splits, annotations

Revision ID: 0001
Revises:
Create Date: 2026-11-24 14:49:38.332198
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinics",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinics")),
        sa.UniqueConstraint("name", name=op.f("uq_clinics_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("clinic_id", sa.Uuid(), nullable=True),
        sa.Column(
            "role",
            sa.Enum("annotator", "admin", "predict", "system", name="role", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_api_keys_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "projects",
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("modality", sa.String(length=40), nullable=False),
        sa.Column("input_width", sa.Integer(), nullable=False),
        sa.Column("input_height", sa.Integer(), nullable=False),
        sa.Column("backbone", sa.String(length=60), nullable=False),
        sa.Column("strategy", sa.String(length=40), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_projects_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("clinic_id", "name", name=op.f("uq_projects_clinic_id")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_projects_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "studies",
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("pixel_sha256", sa.String(length=64), nullable=False),
        sa.Column("source_blob", sa.String(length=64), nullable=False),
        sa.Column("pixels_blob", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("spacing_x_mm", sa.Float(), nullable=True),
        sa.Column("spacing_y_mm", sa.Float(), nullable=True),
        sa.Column("spacing_source", sa.String(length=30), nullable=False),
        sa.Column("modality", sa.String(length=20), nullable=True),
        sa.Column("deid_method", sa.String(length=80), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_studies_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("clinic_id", "pixel_sha256", name=op.f("uq_studies_clinic_id")),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studies_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "landmark_sets",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_landmark_sets_project_id_projects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_landmark_sets")),
        sa.UniqueConstraint("project_id", "step", name=op.f("uq_landmark_sets_project_id")),
    )
    with op.batch_alter_table("landmark_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_landmark_sets_project_id"), ["project_id"], unique=False)

    op.create_table(
        "annotations",
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=200), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name=op.f("fk_annotations_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["set_id"], ["landmark_sets.id"], name=op.f("fk_annotations_set_id_landmark_sets")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_annotations_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
        sa.UniqueConstraint("study_id", "set_id", "version", name=op.f("uq_annotations_study_id")),
    )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_annotations_set_id"), ["set_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_annotations_study_id"), ["study_id"], unique=False)

    op.create_table(
        "associations",
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("old_code", sa.String(length=40), nullable=False),
        sa.Column("new_code_a", sa.String(length=40), nullable=False),
        sa.Column("new_code_b", sa.String(length=40), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["landmark_sets.id"], name=op.f("fk_associations_set_id_landmark_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_associations")),
    )
    with op.batch_alter_table("associations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_associations_set_id"), ["set_id"], unique=False)

    op.create_table(
        "landmarks",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_landmarks_project_id_projects")),
        sa.ForeignKeyConstraint(["set_id"], ["landmark_sets.id"], name=op.f("fk_landmarks_set_id_landmark_sets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_landmarks")),
        sa.UniqueConstraint("project_id", "code", name=op.f("uq_landmarks_project_id")),
    )
    with op.batch_alter_table("landmarks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_landmarks_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_landmarks_set_id"), ["set_id"], unique=False)

    op.create_table(
        "splits",
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("set_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["landmark_sets.id"], name=op.f("fk_splits_set_id_landmark_sets")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_splits_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_splits")),
        sa.UniqueConstraint("study_id", "set_id", name=op.f("uq_splits_study_id")),
    )
    with op.batch_alter_table("splits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_splits_set_id"), ["set_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_splits_study_id"), ["study_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("splits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_splits_study_id"))
        batch_op.drop_index(batch_op.f("ix_splits_set_id"))

    op.drop_table("splits")
    with op.batch_alter_table("landmarks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_landmarks_set_id"))
        batch_op.drop_index(batch_op.f("ix_landmarks_project_id"))

    op.drop_table("landmarks")
    with op.batch_alter_table("associations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_associations_set_id"))

    op.drop_table("associations")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_annotations_study_id"))
        batch_op.drop_index(batch_op.f("ix_annotations_set_id"))

    op.drop_table("annotations")
    with op.batch_alter_table("landmark_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_landmark_sets_project_id"))

    op.drop_table("landmark_sets")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_clinic_id"))

    op.drop_table("studies")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_clinic_id"))

    op.drop_table("projects")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_clinic_id"))

    op.drop_table("api_keys")
    op.drop_table("clinics")
