"""The service's entities (SQLAlchemy 2, typed). Queries live in each domain's repository module."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, Float, ForeignKey, Integer, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, IdMixin


class Role(enum.StrEnum):
    annotator = "annotator"
    admin = "admin"
    predict = "predict"
    system = "system"


class Clinic(IdMixin, Base):
    """A tenant: every object below belongs to exactly one clinic, which alone may see it."""

    __tablename__ = "clinics"
    name: Mapped[str] = mapped_column(String(200), unique=True)
    #: Store DICOM descriptions (StudyDescription, ...) verbatim instead of removing them (server.imaging.descriptors).
    keep_descriptors: Mapped[bool] = mapped_column(default=False, server_default=false())


class ApiKey(IdMixin, Base):
    """An API key, stored as the sha256 of the secret (keys are 256-bit random, so a fast hash suffices).

    `prefix` is the public part of the key, for lookup and for admins to tell keys apart."""

    __tablename__ = "api_keys"
    clinic_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clinics.id"), index=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20))
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]


class Project(IdMixin, Base):
    """One landmark model line (e.g. "lateral ceph"): its modality, input size and training defaults."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("clinic_id", "name"),)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinics.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    modality: Mapped[str] = mapped_column(String(40))
    input_width: Mapped[int] = mapped_column(Integer)
    input_height: Mapped[int] = mapped_column(Integer)
    backbone: Mapped[str] = mapped_column(String(60))
    #: models.config.BackboneConfig.last_relu: whether the head reads the backbone's features after its last
    #: ReLU (every project made before the option) or before it. Fixed with the backbone.
    backbone_last_relu: Mapped[bool] = mapped_column(default=True, server_default=true())
    #: models.config.BackboneConfig.head_channels: the hidden layer of the first stage's head (0: none, every
    #: project made before the option). Fixed with the backbone.
    head_channels: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    strategy: Mapped[str] = mapped_column(String(40))
    training: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The local stage's settings (models.config.RefineConfig as a dict, every field resolved); None: a
    #: one-stage model. Fixed with the backbone: every step of the project trains the same stages.
    local_stage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: Promotion gate overrides: {"max_new_mre": float, "old_tolerance": float}; missing keys use the settings.
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    #: DICOMweb settings (server.projects.schemas.DicomwebIn): {"sr_on_store": bool}.
    dicomweb: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    #: Cephalometric analyses (models.analyses): catalogue landmark code -> the project's code, where they
    #: differ; a catalogue code not named here is the project's own.
    analysis_landmarks: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")

    landmark_sets: Mapped[list[LandmarkSet]] = relationship(
        back_populates="project", order_by="LandmarkSet.step", lazy="selectin"
    )


class LandmarkSet(IdMixin, Base):
    """Step k of a project: the landmarks it adds. Append-only."""

    __tablename__ = "landmark_sets"
    __table_args__ = (UniqueConstraint("project_id", "step"),)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")

    project: Mapped[Project] = relationship(back_populates="landmark_sets")
    landmarks: Mapped[list[Landmark]] = relationship(order_by="Landmark.position", lazy="selectin")
    associations: Mapped[list[Association]] = relationship(lazy="selectin")


class Landmark(IdMixin, Base):
    __tablename__ = "landmarks"
    __table_args__ = (UniqueConstraint("project_id", "code"),)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("landmark_sets.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")


class Association(IdMixin, Base):
    """A KA-Net triplet given by the clinic: old landmark <- two new landmarks of this set."""

    __tablename__ = "associations"
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("landmark_sets.id"), index=True)
    old_code: Mapped[str] = mapped_column(String(40))
    new_code_a: Mapped[str] = mapped_column(String(40))
    new_code_b: Mapped[str] = mapped_column(String(40))


class Study(IdMixin, Base):
    """One de-identified image, stored once per clinic by the hash of its pixels."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("clinic_id", "pixel_sha256"),)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinics.id"), index=True)
    pixel_sha256: Mapped[str] = mapped_column(String(64))
    source_blob: Mapped[str] = mapped_column(String(64))
    pixels_blob: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(20))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    spacing_x_mm: Mapped[float | None] = mapped_column(Float)
    spacing_y_mm: Mapped[float | None] = mapped_column(Float)
    spacing_source: Mapped[str] = mapped_column(String(30))
    modality: Mapped[str | None] = mapped_column(String(20))
    deid_method: Mapped[str | None] = mapped_column(String(80))
    #: Keyed digest of the uploaded file's name stem (server.studies.names); the name itself is never stored.
    name_key: Mapped[str | None] = mapped_column(String(64), index=True)


class Split(IdMixin, Base):
    """A study's role in a landmark set, drawn once when it joins the set and frozen afterwards."""

    __tablename__ = "splits"
    __table_args__ = (UniqueConstraint("study_id", "set_id"),)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("landmark_sets.id"), index=True)
    role: Mapped[str] = mapped_column(String(10))  # "train" | "val"


class Annotation(IdMixin, Base):
    """The landmarks of one set on one study by one annotator. A correction is a new version, never an
    overwrite; the highest version is current."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("study_id", "set_id", "version"),)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("landmark_sets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    annotator: Mapped[str] = mapped_column(String(200))
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    #: {code: [x, y]} in pixels of the study image (pixel-centre convention).
    points: Mapped[dict[str, list[float]]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(40), default="api")
    #: Seconds the annotator spent on this version, when the client recorded it (the console does).
    seconds: Mapped[float | None] = mapped_column(Float)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class VersionStatus(enum.StrEnum):
    candidate = "candidate"
    active = "active"
    rejected = "rejected"
    archived = "archived"


class JobMixin:
    """What every job shares, training or prediction: its project, its life (queued -> running -> succeeded |
    failed | cancelled), the worker's lease, heartbeat and times, who made it, its queue task, its error. One
    claim, heartbeat, reap and finish rule reads these (server.jobs.repository, worker.requeue)."""

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    #: Taken anew by every claim of the row (server.jobs.repository): the worker holding it is the only one that writes.
    lease: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class TrainingJob(JobMixin, IdMixin, Base):
    """Training of one landmark set (step) of a project: queued -> running -> succeeded | failed | cancelled."""

    __tablename__ = "training_jobs"
    set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("landmark_sets.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(40))
    #: TrainConfig fields as the job was created (project defaults + request overrides).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: {"stage", "iteration", "total", "eta_s", "losses", "overall", "overall_eta_s", "curve"} while running.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    log: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("model_versions.id"))


class ModelVersion(IdMixin, Base):
    """An immutable checkpoint of a project's model and its validation report."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("project_id", "number"),)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("model_versions.id"))
    checkpoint_blob: Mapped[str] = mapped_column(String(64))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(40))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: MRE / SD / SDR per landmark and per step on each step's validation studies, and the change of the old
    #: landmarks against the parent.
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[VersionStatus] = mapped_column(Enum(VersionStatus, native_enum=False, length=20), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class PredictionJob(JobMixin, IdMixin, Base):
    """Prediction on many images by a worker: queued -> running -> succeeded | failed.

    The model version is fixed at submission, so a later promotion does not change a job's answers. The images
    are kept as blobs only until the job finishes; the results stay, as one JSON blob."""

    __tablename__ = "prediction_jobs"
    model_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_versions.id"))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    #: One per image, in upload order: {"blob", "filename", "width", "height", "spacing": [x, y] | None,
    #: "spacing_source"}.
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    #: The JSON list of predictions (the /predict/batch schema), once succeeded.
    result_blob: Mapped[str | None] = mapped_column(String(64))


class VersionEvent(IdMixin, Base):
    """Who promoted, rejected or rolled back which version, when and why: the audit trail."""

    __tablename__ = "version_events"
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_versions.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))  # promoted | rejected | rolled_back | archived
    actor: Mapped[str] = mapped_column(String(200))  # an API key id, or "gate" for the automatic decision
    reason: Mapped[str] = mapped_column(Text, default="")


class DicomInstance(IdMixin, Base):
    """A DICOM instance as DICOMweb (server.dicomweb) finds and serves it: a DICOM study's stored image, filled in
    by ingest, or a structured report the service derived from one. Only what QIDO-RS matches and answers is
    here; the instance itself is the blob (for an image, the study's de-identified source file)."""

    __tablename__ = "dicom_instances"
    __table_args__ = (UniqueConstraint("clinic_id", "sop_instance_uid"),)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinics.id"), index=True)
    #: The image study this instance is (kind "image") or reports on (kind "sr").
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    #: The stored values (YYYYMMDD, the pseudonym): de-identification empties the date, so it is usually None.
    study_date: Mapped[str | None] = mapped_column(String(8))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    blob: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("model_versions.id"))
    #: The instance's top-level attributes in the DICOM JSON model, without bulk data or sequences.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
