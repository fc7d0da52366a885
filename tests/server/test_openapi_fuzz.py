"""Schemathesis over the OpenAPI schema: generated requests to every operation never get a 5xx.

The app runs on a temporary SQLite database holding one clinic, a project with a landmark set and a study, so
that generated requests reach past authentication into the handlers."""

from __future__ import annotations

import io
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np
import schemathesis
import schemathesis.specs.openapi.checks as openapi_checks
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image

from server.app import create_app
from server.cli import ensure_system_key
from server.migrate import upgrade
from server.settings import Settings

_tmp = Path(tempfile.mkdtemp(prefix="kamp-fuzz-"))
_settings = Settings(data_dir=_tmp, database_url=f"sqlite:///{_tmp / 'kamp.db'}", rate_limit_per_minute=0)
upgrade(_settings.resolved_database_url)
SYSTEM_KEY = ensure_system_key(_settings)
app = create_app(_settings)


def _seed() -> str:
    client = TestClient(app)
    sys_h = {"Authorization": f"Bearer {SYSTEM_KEY}"}
    admin = client.post("/v1/clinics", json={"name": "Fuzz"}, headers=sys_h).json()["admin_key"]["key"]
    h = {"Authorization": f"Bearer {admin}"}
    pid = client.post(
        "/v1/projects", json={"name": "p", "modality": "cephalometric", "backbone": "hrnet_w18_tiny"}, headers=h
    ).json()["id"]
    client.post(f"/v1/projects/{pid}/landmark-sets", json={"landmarks": [{"code": "S"}, {"code": "N"}]}, headers=h)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="PNG")
    client.post("/v1/studies", files={"file": ("a.png", buf.getvalue())}, headers=h)
    return admin


ADMIN_KEY = _seed()
#: The seeded database, restored before each stateful scenario.
_PRISTINE = _tmp / "pristine.db"


def _restore(source: Path, target: Path) -> None:
    """Copy one SQLite database over another through SQLite's backup API, which writes the pages as a
    transaction that the app's open connections (and its WAL) see consistently."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


_restore(_tmp / "kamp.db", _PRISTINE)
#: Examples per operation; CI runs 15 (the suite must stay under 15 min on the slowest machine kind), a deeper
#: local run sets KAMP_FUZZ_EXAMPLES=500.
EXAMPLES = int(os.environ.get("KAMP_FUZZ_EXAMPLES", "15"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    if response.status_code == 403:  # system-only operations
        response = case.call(headers={"Authorization": f"Bearer {SYSTEM_KEY}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"


CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.allow_header_conformance,
]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_answers_are_documented(case: schemathesis.Case) -> None:
    """Every status and content type an operation answers is in the schema (problems as application/problem+
    json), and a 405's Allow header names the path's real methods."""
    response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    case.validate_response(response, checks=CONFORMANCE)


#: Scenarios of the stateful phase; each chains up to STEPS calls along the links schemathesis infers (a
#: project's id from POST /v1/projects into every /v1/projects/{project_id}/... operation, a key's into DELETE, ...).
SCENARIOS = int(os.environ.get("KAMP_FUZZ_SCENARIOS", "40"))
STEPS = 6


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Chains of calls with the admin key; every answer must be documented and none a 5xx."""

    def setup(self) -> None:
        """Each scenario starts from the seeded database: Hypothesis requires that the same choices lead to the
        same calls, which a state left by earlier scenarios (a project name taken, a key revoked) breaks."""
        _restore(_PRISTINE, _tmp / "kamp.db")

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
        return {"headers": {"Authorization": f"Bearer {ADMIN_KEY}"}}

    def validate_response(self, response: object, case: schemathesis.Case, **kwargs: object) -> None:
        case.validate_response(response, checks=CONFORMANCE)  # type: ignore[arg-type]


def test_chained_calls_stay_documented_and_below_500() -> None:
    assert any(name.startswith("POST_v1_projects___201") for name in dir(Workflow)), "no link inferred from projects"
    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
