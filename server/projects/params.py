"""Path parameters of the routes that name a project's landmark set (the web layer's; schemas.py stays free of
the web framework, so that workers can import it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

#: A landmark set's index in a route's path: 0 .. 100000 (larger integers are refused with 422 before any query; a
#: 64-bit index overflowed SQLite's integers and answered 500).
StepPath = Annotated[int, Path(ge=0, le=100_000, description="the landmark set's step index")]
