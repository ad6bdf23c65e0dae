"""Production processes started as an operator would: gunicorn, Celery workers and beat over
Redis, on a MySQL/MariaDB database of their own. Used by tests/test_workers.py and bench/."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from segflow.client import Client

ROOT = Path(__file__).resolve().parent.parent
# The server of dev.py's MariaDB pass (SEGFLOW_TEST_MYSQL_URL), without its database name.
MYSQL_SERVER = os.environ.get("SEGFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test").rsplit(
    "/", 1
)[0]
REDIS_URL = os.environ.get("SEGFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mysql_connection(database: str | None = None):
    import MySQLdb

    match = re.match(
        r"mysql://(?P<user>[^:@]+)(?::(?P<pw>[^@]*))?@(?P<host>[^:/]+):?(?P<port>\d*)", MYSQL_SERVER
    )
    return MySQLdb.connect(
        host=match["host"],
        port=int(match["port"] or 3306),
        user=match["user"],
        passwd=match["pw"] or "",
        database=database or "",
        autocommit=True,
    )


class Deployment:
    """The production processes, started from the shell as an operator would."""

    def __init__(
        self, tmp_path: Path, config: str, *, concurrency: int = 3, env: dict | None = None
    ) -> None:
        self.tmp = tmp_path
        self.concurrency = concurrency
        self.database = f"segflow_workers_{os.getpid()}"
        self.mail_dir = tmp_path / "mail"
        self.mail_dir.mkdir()
        config_path = tmp_path / "segflow_config.py"
        config_path.write_text(textwrap.dedent(config))
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SEGFLOW_"))},
            "DEBUG": "0",
            "SECRET_KEY": "workers-test-" + "x" * 40,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": f"{MYSQL_SERVER}/{self.database}",
            "CELERY_BROKER_URL": REDIS_URL,
            "SEGFLOW_CONFIG": str(config_path),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(self.mail_dir),
            "SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND": "1",
            "SEGFLOW_TICK_SECONDS": "1",
            "SEGFLOW_SWEEP_AFTER_SECONDS": "5",
            "SEGFLOW_CLAIM_LEASE_SECONDS": "10",
            # A row a killed sender left `sending` is marked `unknown` this soon.
            "SEGFLOW_EMAIL_SENDING_STALE_SECONDS": "15",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "segflow_project.settings",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, name: str, *command: str) -> None:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to kill a worker with its children
        )

    def start_worker(self, name: str) -> None:
        self.start(
            name,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "segflow_project",
            "worker",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "WARNING",
        )

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes.pop(name).wait(timeout=10)

    def up(self, workers: int = 2, push: bool = True) -> Client:
        """Start everything; `push=False` leaves the config to be pushed over HTTP later."""
        with mysql_connection() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {self.database}")
            conn.cursor().execute(
                f"CREATE DATABASE {self.database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        self.manage("migrate", "--noinput")
        if push:
            self.manage("segflow_push")
        key = self.manage("segflow_create_api_key", "workers-test").strip().splitlines()[-1]
        self.start(
            "web",
            sys.executable,
            "-m",
            "gunicorn",
            "segflow_project.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "3",
            "--threads",
            "4",
        )
        for n in range(1, workers + 1):
            self.start_worker(f"w{n}")
        self.start(
            "beat",
            sys.executable,
            "-m",
            "celery",
            "-A",
            "segflow_project",
            "beat",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--loglevel",
            "WARNING",
            "--schedule",
            str(self.tmp / "beat-schedule"),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                return Client.initialize(url=f"http://127.0.0.1:{self.port}", api_key=key)
            except Exception:
                assert time.monotonic() < deadline, (self.tmp / "web.log").read_text()
                time.sleep(0.3)

    def down(self) -> None:
        for name in list(self.processes):
            self.kill(name)
        with mysql_connection() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {self.database}")

    def query(self, sql: str, params=()) -> list[tuple]:
        with mysql_connection(self.database) as conn:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def delivered(self) -> Counter:
        """(recipient, subject) of every message the email backend wrote, counted."""
        counts: Counter = Counter()
        for path in self.mail_dir.iterdir():
            for message in path.read_text().split("-" * 79):
                to = re.search(r"^To: (.+)$", message, re.M)
                subject = re.search(r"^Subject: (.+)$", message, re.M)
                if to and subject:
                    counts[(to[1].strip(), subject[1].strip())] += 1
        return counts

    def report(self, prefix: str) -> str:
        """Where the work of users `prefix-*` stands, and what the processes logged: for a
        failing test's message."""
        like = (prefix + "-%",)
        questions = {
            "outbox": "SELECT status, COUNT(*) FROM outbox WHERE user_id LIKE %s GROUP BY status",
            "cursors": "SELECT status, step_count, COUNT(*) FROM campaign_cursors "
            "WHERE user_id LIKE %s GROUP BY status, step_count",
            "unprocessed events": "SELECT COUNT(*) FROM events "
            "WHERE processed_at IS NULL AND user_id LIKE %s",
            "pending users": "SELECT COUNT(*) FROM users WHERE evaluation_pending AND id LIKE %s",
            "unsent rows": "SELECT `key`, status, attempts, reason, created_at, updated_at, "
            "swept_at FROM outbox WHERE status <> 'sent' AND user_id LIKE %s LIMIT 10",
        }
        lines = [f"{name}: {self.query(sql, like)}" for name, sql in questions.items()]
        for log in sorted(self.tmp.glob("*.log")):
            text = log.read_text(errors="replace")
            if "ERROR" in text or "Traceback" in text or "WARNING" in text:
                lines.append(f"--- {log.name} (last 4000 characters) ---\n{text[-4000:]}")
        return "\n".join(lines)
