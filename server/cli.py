"""`kamp`: the library's commands plus `serve` (the API on the embedded defaults) and `install`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from sqlalchemy import select

from models.cli import build_parser
from models.cli import main as models_main

from .settings import Settings
from .training.queue import QUEUE_PREDICTION, QUEUE_TRAINING

#: The job queues a worker can serve (see server.training.queue).
WORKER_QUEUES = (QUEUE_TRAINING, QUEUE_PREDICTION)


def ensure_system_key(settings: Settings, *, force_new: bool = False) -> str | None:
    """Create the system-admin key if there is none (or if asked); returns the new key, else None."""
    from .auth import create_key
    from .db.entities import ApiKey, Role
    from .db.session import session_factory

    factory = session_factory(settings.resolved_database_url)
    with factory() as session:
        exists = session.scalar(select(ApiKey).where(ApiKey.role == Role.system, ApiKey.revoked_at.is_(None)))
        if exists is not None and not force_new:
            return None
        _, key = create_key(session, role=Role.system, clinic_id=None, name="system admin")
        session.commit()
        return key


def _install(args: argparse.Namespace) -> int:
    from .migrate import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url)
    key = ensure_system_key(settings, force_new=args.new_system_key)
    print(f"database ready: {settings.resolved_database_url}")
    if key:
        print(f"system-admin key (shown once, store it now): {key}")
    else:
        print("a system-admin key exists already (kamp install --new-system-key makes another)")
    return 0


def worker_command(*, beat: bool, loglevel: str = "info", queues: Sequence[str] = WORKER_QUEUES) -> list[str]:
    """The Celery worker as a command line (a subprocess: the server package never imports the worker's).

    One job at a time per process (`--pool solo`): training already uses every core or the GPU. `queues`: the
    job queues it serves (training, prediction or both); the node is named after them."""
    unknown = sorted(set(queues) - set(WORKER_QUEUES))
    if unknown or not queues:
        raise SystemExit(f"unknown queue {', '.join(unknown) or '(none)'}: choose from {', '.join(WORKER_QUEUES)}")
    served = list(queues) + (["celery"] if QUEUE_TRAINING in queues else [])  # tasks sent before queues existed
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--loglevel",
        loglevel,
        "--queues",
        ",".join(served),
        "--hostname",
        f"{'+'.join(queues)}@%h",
    ]
    if beat:  # the periodic reaper of jobs whose worker died
        cmd += ["--beat", "--schedule", str(Settings().data_dir / "celerybeat-schedule")]
    return cmd


def sleeping_openmp_threads() -> None:
    """Make idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the operator
    chose how they wait. `kamp serve` computes in three places on one machine (the inference thread, a training
    and a prediction worker): spinning threads of one hold the cores the others wait for (docs/benchmarks.md,
    "Training and prediction on one machine"). Called before torch loads; the workers inherit it."""
    if not any(name in os.environ for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _worker(args: argparse.Namespace) -> int:
    """Run a worker in the foreground: the GPU when there is one, else the CPU (models.precision)."""
    sleeping_openmp_threads()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    command = worker_command(beat=args.beat, loglevel=args.loglevel, queues=queues)
    # Become the worker rather than wait for it: a signal to this process (or its death) is the worker's own, so
    # no wrapper can die and leave the worker and its beat running.
    os.execv(command[0], command)
    return 0  # not reached


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace) -> int:
    sleeping_openmp_threads()  # before the app's imports load torch
    import uvicorn

    from .app import create_app
    from .migrate import upgrade

    settings = Settings()
    upgrade(settings.resolved_database_url)
    key = ensure_system_key(settings)
    if key:
        print(f"first start: system-admin key (shown once, store it now): {key}", flush=True)
    workers = []
    if not args.no_worker:
        # One worker per queue: a prediction job does not wait for a training run to end.
        workers.append(subprocess.Popen(worker_command(beat=True, loglevel="warning", queues=[QUEUE_TRAINING])))
        workers.append(subprocess.Popen(worker_command(beat=False, loglevel="warning", queues=[QUEUE_PREDICTION])))
        pids = ", ".join(str(w.pid) for w in workers)
        print(f"started the embedded training and prediction workers (pids {pids})", flush=True)
    # uvicorn shuts down on SIGTERM, then raises the signal again under the handler it found: with the default
    # one the process would die there, before the workers are stopped. Ours turns it into an exit that runs the
    # `finally` below (SIGINT already does, as KeyboardInterrupt).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, sub = build_parser()
    s = sub.add_parser("serve", help="run the API on the embedded defaults (SQLite and blobs under ./var)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--no-worker", action="store_true", help="do not start the embedded workers")
    s.set_defaults(func=_serve)
    w = sub.add_parser("worker", help="run a job worker (GPU when there is one, else CPU)")
    w.add_argument("--beat", action="store_true", help="also run the periodic reaper of dead jobs")
    w.add_argument(
        "--queues",
        default=",".join(WORKER_QUEUES),
        help="the job queues to serve, comma-separated: training, prediction (default: both)",
    )
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=_worker)
    i = sub.add_parser("install", help="create or upgrade the database and make the system-admin key")
    i.add_argument("--new-system-key", action="store_true", help="make another system-admin key")
    i.set_defaults(func=_install)
    return models_main(argv, parser)


if __name__ == "__main__":
    sys.exit(main())
