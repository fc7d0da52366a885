"""`kamp serve` as an operator runs it: SIGTERM or SIGINT stops the API and every process it started (the
embedded training worker with its beat child, the prediction worker), leaving none behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def _kamp(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`kamp <args>` started on a data folder under `tmp_path`; whatever is left of its process tree is killed
    at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        for pid in [process.pid, *_descendants(process.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KAMP_DATA_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}


def _survivors(pids: set[int], within_s: float = 30) -> list[int]:
    """Those of `pids` still alive after waiting up to `within_s` for all of them to end."""
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_api_and_every_worker(tmp_path: Path, stop: signal.Signals) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with _kamp(tmp_path, "serve", "--port", str(port)) as serve:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                up = False
            workers = _descendants(serve.pid)
            if up and len(workers) >= 3:  # the two workers (solo pools) and the training worker's beat child
                break
            time.sleep(0.5)
        assert len(workers) >= 3, f"the embedded workers did not start: {sorted(workers)}"
        serve.send_signal(stop)
        serve.wait(timeout=90)
        assert _survivors(workers) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the beat follows its worker through prctl(2)")
def test_the_beat_dies_with_a_killed_worker(tmp_path: Path) -> None:
    install = [sys.executable, "-m", "server.cli", "install"]
    subprocess.run(install, cwd=tmp_path, env=_env(tmp_path), check=True, capture_output=True)
    with _kamp(tmp_path, "worker", "--beat", "--loglevel", "warning") as worker:
        deadline = time.monotonic() + 90
        beat: set[int] = set()
        while not beat and time.monotonic() < deadline:
            beat = _descendants(worker.pid)
            time.sleep(0.5)
        assert beat, "the embedded beat did not start"
        time.sleep(3)  # let the beat reach its start-up signal
        worker.kill()  # SIGKILL: no shutdown code of the worker runs
        worker.wait(timeout=30)
        assert _survivors(beat) == []
