"""Production processes started as an operator would: granian, Celery workers and beat over
Redis, on a MySQL/MariaDB database of their own. Used by tests/test_workers.py, tests/test_drills.py
and bench/. The drills, which stop and start the database and the broker, run a MariaDB and a
Redis of their own (`PrivateMariaDB`, `PrivateRedis`) on free ports."""

from __future__ import annotations

import os
import re
import shutil
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


def mysql_connection(database: str | None = None, server: str = MYSQL_SERVER):
    import MySQLdb

    match = re.match(
        r"mysql://(?P<user>[^:@]+)(?::(?P<pw>[^@]*))?@(?P<host>[^:/]+):?(?P<port>\d*)", server
    )
    return MySQLdb.connect(
        host=match["host"],
        port=int(match["port"] or 3306),
        user=match["user"],
        passwd=match["pw"] or "",
        database=database or "",
        autocommit=True,
        connect_timeout=5,
    )


def wait_until(check, timeout: float, what: str, explain=None) -> None:
    """Wait until check() is true; after `timeout` seconds fail, with what `explain()` says."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            detail = f"\n{explain()}" if explain else ""
            raise AssertionError(f"{what} did not happen within {timeout} s{detail}")
        time.sleep(0.2)


class PrivateServer:
    """A server process this test run started, and only this one stops: its own port, its own
    process group, its files in the test's folder."""

    name = ""
    binaries: tuple[str, ...] = ()

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @classmethod
    def missing(cls) -> list[str]:
        return [b for b in cls.binaries if shutil.which(b) is None]

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        assert self.process is None, f"{self.name} is already running"
        log = open(self.folder / f"{self.name}.log", "a")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_until(self.answers, 60, f"{self.name} answering on port {self.port}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as an operator's `systemctl stop` does."""
        if self.process is None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """The server hangs: it keeps its connections and answers nothing (SIGSTOP)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)


class PrivateRedis(PrivateServer):
    name = "redis"
    binaries = ("redis-server",)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]

    def answers(self) -> bool:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1).ping()


class PrivateMariaDB(PrivateServer):
    name = "mariadb"
    binaries = ("mariadb-install-db", "mariadbd")

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.datadir = folder / "data"
        done = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=" + _user(),
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    @property
    def server(self) -> str:
        """The URL of the server, without a database name (as MYSQL_SERVER)."""
        return f"mysql://root@127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "mariadbd",
            "--no-defaults",
            "--user=" + _user(),
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.folder / 'mariadb.sock'}",
            f"--pid-file={self.folder / 'mariadb.pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=300",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]

    def answers(self) -> bool:
        with mysql_connection(server=self.server) as conn:
            conn.cursor().execute("SELECT 1")
        return True


def _user() -> str:
    import getpass

    return getpass.getuser()


class Deployment:
    """The production processes, started from the shell as an operator would."""

    def __init__(
        self,
        tmp_path: Path,
        config: str,
        *,
        concurrency: int = 3,
        env: dict | None = None,
        pool: str = "prefork",
        embedded_beat: str | None = None,
        mysql_server: str = MYSQL_SERVER,
        redis_url: str = REDIS_URL,
    ) -> None:
        self.tmp = tmp_path
        self.concurrency, self.pool, self.embedded_beat = concurrency, pool, embedded_beat
        self.mysql_server, self.redis_url = mysql_server, redis_url
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
            "DATABASE_URL": f"{mysql_server}/{self.database}",
            "CELERY_BROKER_URL": redis_url,
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
            "--pool",
            self.pool,
            # One machine, one worker: the schedule runs inside it, in a process of its own
            # (`-B`, embedded_beat="process") or in a thread (`--beat-thread`, "thread").
            *({"process": ["-B"], "thread": ["--beat-thread"]}.get(self.embedded_beat or "", [])),
            *(["--schedule", str(self.tmp / f"{name}-schedule")] if self.embedded_beat else []),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "WARNING",
        )

    def kill(self, name: str) -> None:
        try:
            os.killpg(self.processes[name].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it exited, with all of its children
        self.processes.pop(name).wait(timeout=10)

    def start_beat(self, name: str = "beat") -> None:
        self.start(
            name,
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
            str(self.tmp / f"{name}-schedule"),
        )

    def up(
        self, workers: int = 2, push: bool = True, web_workers: int = 3, web_threads: int = 4
    ) -> Client:
        """Start everything; `push=False` leaves the config to be pushed over HTTP later."""
        with mysql_connection(server=self.mysql_server) as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {self.database}")
            conn.cursor().execute(
                f"CREATE DATABASE {self.database} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()
        self.manage("migrate", "--noinput")
        if push:
            self.manage("segflow_push")
        key = self.manage("segflow_create_api_key", "workers-test").strip().splitlines()[-1]
        self.url, self.api_key = f"http://127.0.0.1:{self.port}", key
        self.start(
            "web",
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(web_workers),
            "--blocking-threads",
            str(web_threads),
            "--no-ws",
            "--respawn-failed-workers",
            "segflow_project.wsgi:application",
        )
        for n in range(1, workers + 1):
            self.start_worker(f"w{n}")
        if not self.embedded_beat:
            self.start_beat()
        deadline = time.monotonic() + 60
        while True:
            try:
                return Client.initialize(url=self.url, api_key=key)
            except Exception:
                assert time.monotonic() < deadline, (self.tmp / "web.log").read_text()
                time.sleep(0.3)

    def memory(self) -> dict[str, int]:
        """Resident memory (bytes) of each started process and its children, by name."""
        by_name: dict[str, int] = {}
        page = os.sysconf("SC_PAGE_SIZE")
        for name, process in self.processes.items():
            total = 0
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    # A started process leads its own process group (start_new_session).
                    if int(fields[2]) == process.pid:
                        total += int(fields[21]) * page
                except (OSError, IndexError, ValueError):
                    continue
            by_name[name] = total
        return by_name

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user and system) spent so far by each started process and its children,
        by name, and by the database and Redis servers (shared with anything else using them)."""
        by_name = dict.fromkeys([*self.processes, "mariadb", "redis"], 0.0)
        groups = {process.pid: name for name, process in self.processes.items()}
        servers = {"mariadbd": "mariadb", "mysqld": "mariadb", "redis-server": "redis"}
        tick = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                command = text[text.index("(") + 1 : text.rindex(")")]
                fields = text.rsplit(")", 1)[1].split()
                name = groups.get(int(fields[2])) or servers.get(command)
                if name is not None:
                    by_name[name] += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                continue
        return by_name

    def down(self) -> None:
        for name in list(self.processes):
            self.kill(name)
        with mysql_connection(server=self.mysql_server) as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {self.database}")

    def query(self, sql: str, params=()) -> list[tuple]:
        with mysql_connection(self.database, server=self.mysql_server) as conn:
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
        exited = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        lines.append(f"exited processes (exit code): {exited or 'none'}")
        for log in sorted(self.tmp.glob("*.log")):
            text = log.read_text(errors="replace")
            if "ERROR" in text or "Traceback" in text or "WARNING" in text:
                lines.append(f"--- {log.name} (last 4000 characters) ---\n{text[-4000:]}")
        return "\n".join(lines)
