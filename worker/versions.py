"""A trained step becomes a model version: the clinic's associations as KA-Net's triplets going in, and coming
out the version with its validation report and the gate's decision, recorded with the job's success in one
transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.checkpoint import Checkpoint
from models.registry import strategy
from server.db.entities import (
    JobStatus,
    LandmarkSet,
    ModelVersion,
    Project,
    TrainingJob,
    VersionEvent,
    VersionStatus,
)
from server.db.locks import hold_project
from server.jobs.repository import Lease, ended, log_line
from server.training import repository as versions


def with_associations(
    fields: dict[str, Any], job: TrainingJob, landmark_set: LandmarkSet
) -> tuple[dict[str, Any], str]:
    """The step's TrainConfig fields with the landmark set's associations as KA-Net's triplets (KAMP), and where
    the triplets come from: "training settings" (the project's or the submission's kanet.triplets win),
    "associations" (the clinic's, old <- two new), or "automatic" (chosen from the data, or random for
    kamp_random). The trainer checks their codes against the previous model's head."""
    kanet = dict(fields.get("kanet") or {})
    if kanet.get("triplets"):
        return fields, "training settings"
    if strategy(job.strategy).kanet != "chosen" or not landmark_set.associations:
        return fields, "automatic"
    kanet["triplets"] = [[a.old_code, a.new_code_a, a.new_code_b] for a in landmark_set.associations]
    return {**fields, "kanet": kanet}, "associations"


def triplet_text(triplets: list) -> str:
    return ", ".join(f"{o} <- ({a}, {b})" for o, a, b in triplets)


def record_version(
    session: Session,
    job: TrainingJob,
    lease: Lease,
    project: Project,
    parent: ModelVersion | None,
    key: str,
    checkpoint: Checkpoint,
    train_report: dict,
    report: dict,
    passes: bool,
    reason: str,
    *,
    active_at_start: uuid.UUID | None,
) -> None:
    """The version, its gate decision and the job's success, in one transaction (so with the row lock on the
    project, promotions never leave zero or two active versions); nothing if this worker lost the job.

    A version that passes the gate is promoted only if the project's active version is still `active_at_start`
    (the one when the job began): an admin's rollback or promotion made while the step trained stands, and the
    version stays a candidate for an admin to promote."""
    hold_project(session, project.id)
    lease.lock(session)
    moved = _active_moved(session, project.id, active_at_start) if passes else None
    if moved:
        reason = f"{reason}; not promoted: {moved}"
    number = (
        session.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.project_id == project.id)) or 0
    ) + 1
    version = ModelVersion(
        project_id=project.id,
        number=number,
        step=job.step,
        parent_id=parent.id if parent else None,
        checkpoint_blob=key,
        checkpoint_sha256=key,
        strategy=job.strategy,
        hyperparameters={
            "train": job.config,
            "backbone": project.backbone,
            "backbone_last_relu": checkpoint.backbone.last_relu,  # what was trained, whatever the project says
            "head_channels": checkpoint.backbone.head_channels,
            "input_size": [project.input_width, project.input_height],
            "local_stage": project.local_stage,
            "train_report": train_report,
        },
        report=report,
        status=VersionStatus.candidate,
        reason=reason,
    )
    session.add(version)
    session.flush()
    if not passes:
        version.status = VersionStatus.rejected
        session.add(VersionEvent(version_id=version.id, action="rejected", actor="gate", reason=reason))
    elif not moved:  # the rule of a manual promotion: the replaced version's "archived" event too
        versions.activate(session, version, action="promoted", actor="gate", reason=reason)
    outcome = "rejected" if not passes else "kept as a candidate" if moved else "promoted"
    line = f"version {number} {outcome}: {reason}"
    lease.update(session, **ended(JobStatus.succeeded, model_version_id=version.id, log=log_line(line)))
    session.commit()


def _active_moved(session: Session, project_id: uuid.UUID, active_at_start: uuid.UUID | None) -> str | None:
    """Why a passing version must not replace the active one: the active version changed since the job began
    (None where it did not)."""
    now = versions.active_version(session, project_id)
    if (now.id if now else None) == active_at_start:
        return None
    before = f"v{versions.version_number(session, active_at_start)}" if active_at_start else "none"
    after = f"v{now.number}" if now else "none"
    return (
        f"the active version changed from {before} to {after} while this step trained (a decision made meanwhile "
        "stands); promote this version by hand to use it"
    )
