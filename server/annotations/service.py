"""Validation, versioning and splits of annotations."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..db.entities import Annotation, LandmarkSet, Split, Study
from ..db.locks import hold_project
from ..problems import Problem
from ..studies import names
from .schemas import PointIn


def validate_points(points: Sequence[PointIn], landmark_set: LandmarkSet, study: Study) -> dict[str, list[float]]:
    """{code: [x, y]} after checking codes belong to the set, appear once, and lie inside the image."""
    allowed = [lm.code for lm in landmark_set.landmarks]
    codes = [p.code for p in points]
    unknown = sorted({c for c in codes if c not in allowed})
    if unknown:
        raise Problem(
            422,
            f"landmark codes not in set {landmark_set.step}: {', '.join(unknown)} (the set has {', '.join(allowed)})",
            slug="unknown-landmark",
        )
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        raise Problem(422, f"landmarks given more than once: {', '.join(repeated)}", slug="duplicate-landmark")
    outside = [p.code for p in points if not (-0.5 <= p.x <= study.width - 0.5 and -0.5 <= p.y <= study.height - 0.5)]
    if outside:
        raise Problem(
            422,
            f"points outside the {study.width}x{study.height} image: {', '.join(outside)}",
            slug="point-outside-image",
        )
    order = {c: i for i, c in enumerate(allowed)}
    return {p.code: [p.x, p.y] for p in sorted(points, key=lambda p: order[p.code])}


def next_role(joined: int, validation: int, validation_fraction: float) -> str:
    """The role of the next study to join a set that already has `joined` studies, `validation` of them "val":
    "val" while the set is below its share of validation studies (rounded half up), else "train". A quota rather
    than a random draw: even a small set gets its validation studies (6 studies at 20% give one), so its versions
    can be validated."""
    target = math.floor(validation_fraction * (joined + 1) + 0.5)
    return "val" if validation < target else "train"


def split_of(session: Session, study: Study, landmark_set: LandmarkSet, validation_fraction: float) -> Split:
    """The study's role in the set: decided once when it first joins (by the quota), frozen afterwards. A study
    joins one step of a project only (409 otherwise): each step's landmarks are annotated on new studies, and a
    study in two steps could train one step's model on an image that validates another's."""
    row = session.scalar(select(Split).where(Split.study_id == study.id, Split.set_id == landmark_set.id))
    if row is None:
        hold_project(session, landmark_set.project_id)  # two steps joining the study at once see each other
        other = session.scalar(
            select(LandmarkSet.step)
            .join(Split, Split.set_id == LandmarkSet.id)
            .where(Split.study_id == study.id, LandmarkSet.project_id == landmark_set.project_id)
            .limit(1)
        )
        if other is not None:
            raise Problem(
                409,
                f"study {study.id} is annotated in step {other} of this project already; each step's landmarks "
                "are annotated on new studies (its validation images must not train another step)",
                slug="study-in-another-step",
            )
        roles = list(session.scalars(select(Split.role).where(Split.set_id == landmark_set.id)))
        row = Split(
            study_id=study.id,
            set_id=landmark_set.id,
            role=next_role(len(roles), roles.count("val"), validation_fraction),
        )
        session.add(row)
        session.flush()  # the next study of the same import counts this one
    return row


def add_annotations(
    session: Session,
    landmark_set: LandmarkSet,
    items: Sequence[tuple[Study, dict[str, list[float]]]],
    *,
    annotator: str,
    api_key_id: uuid.UUID,
    validation_fraction: float,
    source: str = "api",
    seconds: float | None = None,
) -> list[tuple[Annotation, str]]:
    """New versions (never overwrites) with each study's split, committed together: all or nothing. A concurrent
    writer of the same study's next version (or split) makes the unique constraints fail, at a flush or at the
    commit: 409, nothing of this call kept."""
    rows = []
    try:
        for study, points in items:
            split = split_of(session, study, landmark_set, validation_fraction)
            latest = session.scalar(
                select(func.max(Annotation.version)).where(
                    Annotation.study_id == study.id, Annotation.set_id == landmark_set.id
                )
            )
            row = Annotation(
                study_id=study.id,
                set_id=landmark_set.id,
                version=(latest or 0) + 1,
                annotator=annotator,
                api_key_id=api_key_id,
                points=points,
                source=source,
                seconds=seconds,
            )
            session.add(row)
            session.flush()
            rows.append((row, split.role))
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Problem(
            409, "another annotation of these studies was saved at the same moment; retry", slug="conflict"
        ) from exc
    return rows


#: Digests looked up in one query: an import may name tens of thousands of images, and a query's bound parameters
#: are limited (PostgreSQL's protocol 65,535, SQLite 32,766).
_DIGESTS_PER_QUERY = 1000


def studies_by_reference(session: Session, clinic_id: uuid.UUID, references: list[str], key: bytes) -> dict[str, Study]:
    """The clinic's study each import reference ("001", "001.jpg") names, matched by the digest of the name it
    was uploaded under (server.studies.names); references that match none are left out. A reference whose name
    several studies were uploaded under (different images, one file name) is refused (409): it names none."""
    wanted = {ref: names.reference_keys(ref, key) for ref in references}
    digests = sorted({d for keys in wanted.values() for d in keys})
    by_key: dict[str | None, list[Study]] = defaultdict(list)
    for start in range(0, len(digests), _DIGESTS_PER_QUERY):
        chunk = digests[start : start + _DIGESTS_PER_QUERY]
        for study in session.scalars(select(Study).where(Study.clinic_id == clinic_id, Study.name_key.in_(chunk))):
            by_key[study.name_key].append(study)
    matched = {ref: next((by_key[d] for d in keys if d in by_key), []) for ref, keys in wanted.items()}
    ambiguous = sorted(ref for ref, studies in matched.items() if len(studies) > 1)
    if ambiguous:
        raise Problem(
            409,
            f"more than one uploaded study is named {', '.join(ambiguous[:20])}: the import cannot tell which it "
            "means; annotate those studies by their id (POST .../annotations) instead",
            slug="ambiguous-reference",
        )
    return {ref: studies[0] for ref, studies in matched.items() if studies}


def current_annotations(session: Session, landmark_set: LandmarkSet) -> list[Annotation]:
    """The latest version of each study's annotation in the set."""
    latest = (
        select(Annotation.study_id, func.max(Annotation.version).label("v"))
        .where(Annotation.set_id == landmark_set.id)
        .group_by(Annotation.study_id)
        .subquery()
    )
    q = (
        select(Annotation)
        .join(latest, (Annotation.study_id == latest.c.study_id) & (Annotation.version == latest.c.v))
        .where(Annotation.set_id == landmark_set.id)
        .order_by(Annotation.created_at, Annotation.id)
    )
    return list(session.scalars(q))
