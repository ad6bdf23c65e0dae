"""Beat in a thread of the one worker (`celery worker --beat-thread`): the schedule runs without
a process of its own, so a small machine keeps one whole Django fewer in memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .deployment import ROOT, Deployment

pytestmark = [pytest.mark.mysql_only, pytest.mark.redis]

CONFIG = """
from segflow.config import SegflowConfig

def hello(ctx, rt):
    yield rt.send_email("hello")
    yield rt.wait(seconds=2)
    yield rt.send_email("again")

html = lambda user: "<p>hello</p>"
config: SegflowConfig = {
    "templates": {"hello": {"subject": "Hello", "html": html},
                  "again": {"subject": "Again", "html": html}},
    "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {"hello": {"segments": ["everyone"], "behavior": "static", "flow": hello}},
}
"""


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path, CONFIG, concurrency=2, embedded_beat="thread")
    try:
        yield deployment
    finally:
        deployment.down()


def processes_in_group(leader: int) -> int:
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == leader:
                count += 1
        except (OSError, IndexError, ValueError):
            continue
    return count


def test_the_schedule_runs_in_a_thread_of_the_worker(deployment):
    client = deployment.up()
    assert "beat" not in deployment.processes
    for n in range(3):
        client.create_user(f"b-{n}", {"email": f"b-{n}@example.com"})
    # The second email goes out only when the schedule's tick finds the finished wait.
    deadline = time.monotonic() + 90
    while True:
        delivered = deployment.delivered()
        if sum(count for (_, subject), count in delivered.items() if subject == "Again") >= 3:
            break
        assert time.monotonic() < deadline, f"{delivered}\n{deployment.report('b')}"
        time.sleep(0.5)
    assert set(delivered.values()) == {1}, delivered
    # The worker's main process and its two pool processes; no beat process beside them.
    assert processes_in_group(deployment.processes["w1"].pid) == 3


def test_beat_thread_and_beat_process_together_are_refused(deployment):
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "segflow_project", "worker", "-B", "--beat-thread"],
        cwd=ROOT,
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--beat-thread and -B both start beat: choose one" in done.stdout + done.stderr
