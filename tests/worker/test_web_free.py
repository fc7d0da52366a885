"""The workers do not load the web framework: the rules they share with the API (problems, schemas, services)
live in modules free of it (server.problems; the handlers stay in server.errors, the path parameters in
server.projects.params)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import worker
for module in pkgutil.iter_modules(worker.__path__):
    importlib.import_module(f"worker.{module.name}")
print(sorted(m for m in ("fastapi", "starlette") if m in sys.modules))
"""


def test_every_worker_module_imports_without_fastapi_or_starlette() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
