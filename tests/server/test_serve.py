"""`kamp serve` as an operator runs it: SIGTERM or SIGINT stops the API and every process it started (the
embedded training worker with its beat child, the prediction worker), leaving none behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_api_and_every_worker(tmp_path: Path, stop: signal.Signals) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KAMP_DATA_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
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
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [p for p in workers if _alive(p)] == []
    finally:
        for pid in [serve.pid, *_descendants(serve.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the beat follows its worker through prctl(2)")
def test_the_beat_dies_with_a_killed_worker(tmp_path: Path) -> None:
    env = {**os.environ, "KAMP_DATA_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}
    install = [sys.executable, "-m", "server.cli", "install"]
    subprocess.run(install, cwd=tmp_path, env=env, check=True, capture_output=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker", "--beat", "--loglevel", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        beat: set[int] = set()
        while not beat and time.monotonic() < deadline:
            beat = _descendants(worker.pid)
            time.sleep(0.5)
        assert beat, "the embedded beat did not start"
        time.sleep(3)  # let the beat reach its start-up signal
        worker.kill()  # SIGKILL: no shutdown code of the worker runs
        worker.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in beat) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [p for p in beat if _alive(p)] == []
    finally:
        for pid in [worker.pid, *_descendants(worker.pid)]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
