"""Server processes (the WSGI application granian loads, Celery's worker processes) leave what
they loaded for life out of the garbage collector's walks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GC_STATE = "import gc; print(gc.get_freeze_count())"


def frozen_after(code: str) -> int:
    """How many objects the garbage collector leaves alone after `code` ran in a new process."""
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "segflow_project.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_a_plain_interpreter_freezes_nothing():
    assert frozen_after(GC_STATE) == 0


def test_the_wsgi_application_settles_the_collector_once_loaded():
    assert frozen_after(f"import segflow_project.wsgi\n{GC_STATE}") > 10_000  # Django, the apps


@pytest.mark.parametrize("signal", ["worker_init", "worker_process_init"])
def test_celery_worker_processes_settle_the_collector(signal):
    code = (
        "import django; django.setup()\n"
        "from celery import signals\n"
        "import segflow_project.celery\n"
        f"signals.{signal}.send(sender=None)\n{GC_STATE}"
    )
    assert frozen_after(code) > 10_000
