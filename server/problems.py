"""Problems: the errors the service's rules raise (RFC 9457 problem details once the API answers them).

Free of the web framework, so that the workers and the library-facing services can raise and catch them; the
API's handlers that turn them into answers are in server.errors."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document.

    `slug` names the kind of problem; its type URI is /problems/<slug> (documented in the OpenAPI schema)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or HTTPStatus(status).phrase.lower().replace(" ", "-")
        self.title = title or HTTPStatus(status).phrase
        self.extra = extra or {}
        self.headers = headers


#: RFC 9457 problem document, as every error answers it.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "/problems/<slug>: what kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "instance": {"type": "string"},
    },
}
#: The error answers any operation may give, documented on every one (routes add their own).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
    for status in (400, 401, 403, 404, 405, 409, 413, 422, 429, 503)
}


def not_found(what: str) -> Problem:
    return Problem(404, f"{what} does not exist", slug="not-found")


#: Every database connection is taken: 503 with Retry-After, not a server fault.
BUSY = Problem(503, "the service is at capacity; retry shortly", slug="busy", headers={"Retry-After": "2"})
