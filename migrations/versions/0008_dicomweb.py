"""dicomweb: the DICOM instances QIDO-RS finds (stored images and derived SRs), and a project's DICOMweb settings

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # DICOM studies stored before this revision are not indexed: their UIDs are in the blobs, which a migration
    # does not read. They stay reachable through /v1/studies; DICOMweb lists what is stored from now on.
    op.create_table(
        "dicom_instances",
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("blob", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Uuid(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_dicom_instances_clinic_id_clinics")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_dicom_instances_study_id_studies")),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name=op.f("fk_dicom_instances_model_version_id_model_versions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_instances")),
        sa.UniqueConstraint("clinic_id", "sop_instance_uid", name=op.f("uq_dicom_instances_clinic_id")),
    )
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dicom_instances_clinic_id"), ["clinic_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dicom_instances_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dicom_instances_study_instance_uid"), ["study_instance_uid"], unique=False)
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dicomweb", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("dicomweb")
    with op.batch_alter_table("dicom_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dicom_instances_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_dicom_instances_study_id"))
        batch_op.drop_index(batch_op.f("ix_dicom_instances_clinic_id"))
    op.drop_table("dicom_instances")
