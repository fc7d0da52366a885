"""A real `kamp serve` on a free port (SQLite, embedded workers) and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server.test_serve import _alive, _descendants

playwright = pytest.importorskip("playwright.sync_api")


@dataclass
class Served:
    url: str
    system_key: str
    data_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _system_key(log: Path, process: subprocess.Popen[bytes], url: str) -> str:
    """The key `kamp serve` prints on its first start, once the API answers."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kamp serve exited: {log.read_text()[-2000:]}")
        match = re.search(r"system-admin key \(shown once, store it now\): (\S+)", log.read_text())
        try:
            if match and httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return match.group(1)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"kamp serve did not answer within 90 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve")
    port = _free_port()
    log = root / "serve.log"
    env = {**os.environ, "KAMP_DATA_DIR": str(root / "var"), "OMP_NUM_THREADS": "1", "KAMP_TORCH_THREADS": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield Served(url, _system_key(log, process, url), root / "var")
    finally:
        pids = [process.pid, *_descendants(process.pid)]
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _chromium() -> str:
    found = os.environ.get("KAMP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()
