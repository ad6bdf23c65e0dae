"""What the benchmarks share: the production deployment of tests/deployment.py, and figures."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deployment import Deployment  # noqa: E402

__all__ = ["Deployment", "ROOT", "django_here", "percentile", "scratch_dir", "summary"]


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


# The deployment's processes lead process groups of their own, so a `kill` of the benchmark does
# not reach them: on SIGTERM it unwinds as on Ctrl-C, and its `finally` stops what it started.
signal.signal(signal.SIGTERM, _exit_on_sigterm)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> str:
    ms = [v * 1000 for v in latencies]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms"
    )


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="segflow-bench-"))


@contextmanager
def django_here(name: str, **env: str) -> Iterator[str]:
    """segflow's Django in this process, with production settings (and `env` on top), on a
    MariaDB database of its own, migrated, dropped afterwards. Yields the database's name."""
    import MySQLdb

    database = f"segflow_{name}_{os.getpid()}"
    server = MySQLdb.connect(host="127.0.0.1", user="root", autocommit=True)
    server.cursor().execute(
        f"CREATE DATABASE {database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    os.environ.update(
        DATABASE_URL=f"mysql://root@127.0.0.1:3306/{database}",
        DEBUG="0",
        SECRET_KEY="profile-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="segflow_project.settings",
        **env,
    )
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield database
    finally:
        server.cursor().execute(f"DROP DATABASE IF EXISTS {database}")
