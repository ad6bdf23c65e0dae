#!/usr/bin/env python3
"""segflow's two commands, with nothing but Python 3.11+ on the machine.

    python3 dev.py          set up and run: API, admin and workers at http://127.0.0.1:8000
    python3 dev.py test     run the whole test suite on SQLite and, at the same time, on
                            MySQL/MariaDB if one answers: about 12 minutes
    python3 dev.py test --sqlite-only     the SQLite pass alone (or SEGFLOW_TEST_SQLITE_ONLY=1)

It keeps a virtual environment in .venv and reinstalls only when pyproject.toml changes.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - this check is for people running an older Python
    sys.exit(f"segflow needs Python 3.11 or newer; this is {sys.version.split()[0]}.")

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import tomllib
import urllib.parse
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
MYSQL_TEST_URL = os.environ.get("SEGFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_TEST_URL = os.environ.get("SEGFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
# The admin's browser tests drive Debian's Chromium (apt-get install chromium).
CHROMIUM = os.environ.get("SEGFLOW_CHROMIUM", "/usr/bin/chromium")
# How long each pass of the whole suite takes on a 2-core machine, to say before it starts.
SQLITE_PASS = "about 6 minutes"
MYSQL_PASS = "about 12 minutes"
MYSQL_PASS_WITHOUT_WORKERS = "about 4 minutes"
WORKERS_TESTS = (
    "6 of them for the tests that start a real web server, workers and beat (test_workers.py, "
    "test_workers_push.py, test_drills.py)"
)
TRUE = ("1", "true", "yes", "on", "y", "ok")


def say(message: str) -> None:
    print(f"[segflow] {message}", flush=True)


def run(*args: str | Path, env: dict | None = None) -> int:
    return subprocess.call([str(a) for a in args], cwd=ROOT, env=env)


def start(*args: str | Path, env: dict, output) -> subprocess.Popen:
    return subprocess.Popen(
        [str(a) for a in args], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
    )


def ensure_venv() -> None:
    if PYTHON.exists():
        return
    say(f"Creating a virtual environment in {VENV} ...")
    try:
        venv.create(VENV, with_pip=True)
    except Exception:
        # Debian's python3 comes without ensurepip (package python3-venv): bootstrap pip from PyPI.
        say("This Python has no ensurepip; fetching pip from PyPI instead ...")
        venv.create(VENV, with_pip=False, clear=True)
        bootstrap_pip()


def bootstrap_pip() -> None:
    with urllib.request.urlopen("https://pypi.org/pypi/pip/json", timeout=60) as response:
        release = json.load(response)
    wheel = next(f for f in release["urls"] if f["filename"].endswith(".whl"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        with urllib.request.urlopen(wheel["url"], timeout=120) as response:
            path.write_bytes(response.read())
        if run(PYTHON, f"{path}/pip", "install", "--quiet", str(path)) != 0:
            sys.exit(
                "Installing pip into .venv failed; install Debian's python3-venv and try again."
            )


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return wanted


def ensure_installed(extras: list[str]) -> None:
    wanted = requirements(extras)
    stamp = VENV / f"segflow-{'-'.join(extras) or 'base'}.installed"
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"Installing {len(wanted)} packages{' (' + ', '.join(extras) + ')' if extras else ''} ...")
    if run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted) != 0:
        if "mysql" in extras:
            sys.exit(
                "Installing mysqlclient failed. It builds against MariaDB's client library: on "
                "Debian or Ubuntu run `apt-get install libmariadb-dev pkg-config`, then try again."
            )
        sys.exit("Installing the dependencies failed; see pip's message above.")
    stamp.write_text(digest)


def ensure_dotenv() -> None:
    # A local run is a development run: DEBUG on, a throwaway secret key, SQLite in var/.
    dotenv = ROOT / ".env"
    if not dotenv.exists():
        dotenv.write_text("DEBUG=1\n")
        say("Wrote .env (DEBUG=1) for local development.")


def redis_database(url: str, offset: int) -> str:
    """The same Redis server, `offset` databases further on (the tests use a database and the one
    after it)."""
    parts = urllib.parse.urlsplit(url)
    database = int(parts.path.strip("/") or 0) + offset
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def answers(url: str, default_port: int) -> bool:
    rest = url.split("://", 1)[-1].split("@", 1)[-1].split("/", 1)[0]
    host, _, port = rest.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or default_port)), timeout=2):
            return True
    except OSError:
        return False


def up(args: list[str]) -> int:
    ensure_venv()
    ensure_installed([])
    ensure_dotenv()
    return run(PYTHON, "manage.py", "segflow_up", *args)


def test(args: list[str]) -> int:
    sqlite_only = "--sqlite-only" in args or (
        os.environ.get("SEGFLOW_TEST_SQLITE_ONLY", "").lower() in TRUE
    )
    args = [a for a in args if a != "--sqlite-only"]
    ensure_venv()
    ensure_installed(["dev"])
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")
    }
    without_redis = ""
    if not answers(REDIS_TEST_URL, 6379):
        without_redis = " and not redis"
        say(f"No Redis answers at {REDIS_TEST_URL}: the tests that need one are left out.")
    without_browser = "" if Path(CHROMIUM).exists() else " and not browser"
    mysql_server = MYSQL_TEST_URL.split("@")[-1]
    mysql = not sqlite_only and answers(MYSQL_TEST_URL, 3306)
    mysql_pass = MYSQL_PASS_WITHOUT_WORKERS if without_redis else MYSQL_PASS
    if mysql:
        workers = "" if without_redis else f", {WORKERS_TESTS}"
        say(
            f"The whole suite runs twice, on SQLite ({SQLITE_PASS}) and on MySQL/MariaDB "
            f"({mysql_pass}{workers}), both at once. `python3 dev.py test --sqlite-only` runs "
            "the first alone."
        )
    elif not sqlite_only:
        say(
            f"No MySQL/MariaDB answers at {mysql_server}: SQLite only. Set SEGFLOW_TEST_MYSQL_URL "
            "to test against one."
        )
    if without_browser:
        say(
            f"No Chromium at {CHROMIUM}: the admin's browser tests are left out "
            "(apt-get install chromium, or set SEGFLOW_CHROMIUM)."
        )
    say("Import contracts (lint-imports: layers point down, no import circle) ...")
    failed = run(VENV / "bin" / "lint-imports", env=base_env) != 0
    # Tests of row locks and of real workers need MySQL/MariaDB; they run in its pass only.
    sqlite_pass = [PYTHON, "-m", "pytest", "-m", "not mysql_only" + without_redis + without_browser]
    sqlite_env = {**base_env, "SEGFLOW_TEST_REDIS_URL": REDIS_TEST_URL}
    if not mysql:
        say(f"Tests on SQLite ({SQLITE_PASS} for the whole suite) ...")
        failed |= run(*sqlite_pass, *args, env=sqlite_env) != 0
        if not sqlite_only:
            say(f"No MySQL/MariaDB answered at {mysql_server}: ran SQLite only.")
        return 1 if failed else 0
    ensure_installed(["dev", "mysql"])
    leave_out = (without_redis + without_browser).removeprefix(" and ")
    marks = ["-m", leave_out] if leave_out else []
    # The passes run at the same time (the MariaDB pass spends half its time waiting on the
    # database and on the processes it starts), each with Redis databases of its own.
    mysql_env = {
        **base_env,
        "DATABASE_URL": MYSQL_TEST_URL,
        "SEGFLOW_TEST_REDIS_URL": redis_database(REDIS_TEST_URL, 2),
    }
    with tempfile.NamedTemporaryFile(
        "w+", prefix="segflow-sqlite-pass-", suffix=".log", delete=False
    ) as sqlite_log:
        say(
            f"Tests on SQLite, in the background; what they print is shown when they end "
            f"(and kept in {sqlite_log.name}) ..."
        )
        sqlite_run = start(*sqlite_pass, *args, env=sqlite_env, output=sqlite_log)
        try:
            say(f"Tests on MySQL/MariaDB at {mysql_server} ({mysql_pass} for the whole suite) ...")
            failed |= run(PYTHON, "-m", "pytest", *marks, *args, env=mysql_env) != 0
            if sqlite_run.poll() is None:
                say("Waiting for the tests on SQLite to end ...")
            failed |= sqlite_run.wait() != 0
        finally:
            if sqlite_run.poll() is None:  # stopped with Ctrl-C
                sqlite_run.terminate()
                sqlite_run.wait()
        sqlite_log.seek(0)
        say("What the tests on SQLite printed:")
        print(sqlite_log.read(), end="", flush=True)
    return 1 if failed else 0


def main() -> int:
    command, *args = sys.argv[1:] or ["up"]
    if command == "up":
        return up(args)
    if command == "test":
        return test(args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
