"""The base of every JSON request body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """Unknown fields are refused (422 naming them) rather than silently dropped: a misspelt `"traning"` must not
    create a project with default training settings."""

    model_config = ConfigDict(extra="forbid")
