"""server.db.locks.hold_project on both databases: a second session that holds a project waits until the first
commits, so that two submissions (or a promotion beside a worker recording a version) cannot both pass the
project's checks before either writes."""

from __future__ import annotations

import threading
import uuid

from server.db.session import session_factory
from server.training.repository import lock_project

from .api_helpers import CEPH
from .conftest import Api


def test_a_second_holder_waits_for_the_first_to_commit(api: Api) -> None:
    clinic_id, admin = api.clinic()
    r = api.client.post("/v1/projects", json=CEPH, headers=api.headers(admin))
    assert r.status_code == 201, r.text
    clinic, project = uuid.UUID(clinic_id), uuid.UUID(r.json()["id"])
    factory = session_factory(api.settings.resolved_database_url)
    with factory() as first, factory() as second:
        assert lock_project(first, clinic, project).id == project
        held = threading.Event()

        def hold() -> None:
            lock_project(second, clinic, project)
            held.set()
            second.commit()

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            assert not held.wait(0.5)  # the first still holds the project
            first.commit()
            assert held.wait(10)
        finally:
            first.rollback()
            thread.join(15)
