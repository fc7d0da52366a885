"""FastAPI dependencies, declared once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from .settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    # async: a plain def dependency is run on the thread pool, a hop that costs more than this whole function.
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's session. Write routes commit it themselves before they answer (so a failed commit can
    never follow a success response); whatever is left uncommitted is rolled back when the request ends."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
