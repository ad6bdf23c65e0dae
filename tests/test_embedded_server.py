"""The embedded default as a user runs it: one process serving the API and the admin, with the
workers and the scheduler inside it, on a SQLite file. Driven from outside, with the client."""

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from segflow.client import Client

from .deployment import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")},
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'segflow.sqlite3'}",
        "SEGFLOW_DEV_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "DJANGO_SETTINGS_MODULE": "segflow_project.settings",
    }
    env.pop("SECRET_KEY", None)
    setup = subprocess.run(
        [sys.executable, "manage.py", "segflow_up", f"127.0.0.1:{port}", "--no-serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    assert "+ onboarding: static" in setup.stdout  # the example config was pushed
    credentials = json.loads((tmp_path / "credentials.json").read_text())
    assert credentials["api_key"] in setup.stdout and credentials["password"] in setup.stdout

    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "segflow_serve", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/health", timeout=1)
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up in 30 s"
            time.sleep(0.1)
    yield {
        "url": url,
        "key": credentials["api_key"],
        "db": tmp_path / "segflow.sqlite3",
        "log": tmp_path / "server.log",
    }
    process.terminate()
    process.wait(timeout=10)
    log.close()


def outbox(db: Path, **where) -> list[tuple]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "1 = 1"
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT template_name, status, subject FROM outbox WHERE {clause} ORDER BY id",
            list(where.values()),
        ).fetchall()


def test_a_purchase_through_the_client_is_confirmed_within_a_second(server):
    client = Client.initialize(url=server["url"], api_key=server["key"])
    client.create_user(
        "user123",
        {"email": "jane@example.com", "name": "Jane", "lastLoginAt": "2026-11-27T10:00:00+00:00"},
    )
    started = time.monotonic()
    client.emit("user123", "purchase", {"orderId": "ord_123", "amount": 99.99})
    while not outbox(server["db"], transaction_name="purchase-confirmation", status="sent"):
        assert time.monotonic() - started < 1.0, outbox(server["db"])
        time.sleep(0.02)
    assert outbox(server["db"], transaction_name="purchase-confirmation") == [
        ("purchase-confirmation", "sent", "Order Confirmed, Jane!")
    ]
    # The console backend prints the emails where the developer sees them.
    deadline = time.monotonic() + 5
    while "Subject: Order Confirmed, Jane!" not in server["log"].read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The new user entered onboarding, and its welcome email went out too.
    assert ("welcome", "sent", "Welcome Jane!") in outbox(server["db"])
    assert client.get_user("user123")["campaigns"][0]["campaign"] == "onboarding"


def test_the_admin_is_served_with_its_styles(server):
    login = urllib.request.urlopen(f"{server['url']}/admin/login/", timeout=5)
    assert login.status == 200 and b"segflow admin" in login.read()
    css = urllib.request.urlopen(f"{server['url']}/static/admin/css/base.css", timeout=5)
    assert css.status == 200
