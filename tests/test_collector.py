"""Server processes (the WSGI application granian loads, Celery's worker processes) leave what
they loaded for life out of the garbage collector's walks, and collect less often."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segflow.collector import YOUNGEST_GENERATION_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent

GC_STATE = "import gc, json; print(json.dumps([gc.get_threshold()[0], gc.get_freeze_count()]))"


def python(code: str) -> list:
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "segflow_project.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_plain_interpreter_collects_as_python_does():
    threshold, frozen = python(GC_STATE)
    assert threshold < YOUNGEST_GENERATION_THRESHOLD
    assert frozen == 0


def test_the_wsgi_application_settles_the_collector_once_loaded():
    threshold, frozen = python(f"import segflow_project.wsgi\n{GC_STATE}")
    assert threshold == YOUNGEST_GENERATION_THRESHOLD
    assert frozen > 10_000  # Django and the apps, at least


@pytest.mark.parametrize("signal", ["worker_init", "worker_process_init"])
def test_celery_worker_processes_settle_the_collector(signal):
    code = (
        "import django; django.setup()\n"
        "from celery import signals\n"
        "import segflow_project.celery\n"
        f"signals.{signal}.send(sender=None)\n{GC_STATE}"
    )
    threshold, frozen = python(code)
    assert threshold == YOUNGEST_GENERATION_THRESHOLD
    assert frozen > 10_000
