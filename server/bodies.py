"""The base of every JSON request body, and the type of every timestamp an answer carries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class RequestBody(BaseModel):
    """Unknown fields are refused (422 naming them) rather than silently dropped: a misspelt `"traning"` must not
    create a project with default training settings."""

    model_config = ConfigDict(extra="forbid")


def in_utc(value: datetime) -> datetime:
    # SQLite hands back the stored UTC times without their zone; PostgreSQL with it.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A timestamp answered in UTC with its offset ("2026-12-01T15:30:00Z"), whichever database stored it.
UtcDatetime = Annotated[datetime, AfterValidator(in_utc)]
