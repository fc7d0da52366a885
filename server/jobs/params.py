"""Query parameters of the routes that list jobs, either kind (the web layer's: the package's other modules stay
free of the web framework, so that workers can import them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

#: How many of the newest jobs a list answers.
ListLimit = Annotated[int, Query(ge=1, le=1000)]
