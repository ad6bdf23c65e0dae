"""Without DEBUG, a missing secret stops manage.py with one clear line, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# No database here: the SQLite pass of `python3 dev.py test` runs these; the MySQL one need not.
pytestmark = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("mysql"), reason="uses no database"
)


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ALLOWED_HOSTS")},
        "DJANGO_SETTINGS_MODULE": "segflow_project.settings",
        "DEBUG": "0",
        # Set, and empty: a .env in the checkout must not fill them in.
        "SECRET_KEY": "",
        "ALLOWED_HOSTS": "",
        **env,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["check", "segflow_push"])
def test_no_secret_key_says_so_in_one_line(command):
    done = manage(command)
    assert done.returncode != 0
    assert done.stderr == (
        "SECRET_KEY is not set. Set it in the environment (any long random string), or set "
        "DEBUG=1 for a local development run.\n"
    )
    assert done.stdout == ""


def test_no_allowed_hosts_says_so_in_one_line():
    done = manage("check", SECRET_KEY="a-long-random-string-" + "x" * 40)
    assert done.returncode != 0
    assert done.stderr == (
        "ALLOWED_HOSTS is not set. Set it to the host names segflow is served under, comma "
        "separated (for example ALLOWED_HOSTS=segflow.example.com).\n"
    )


def test_with_both_set_check_passes():
    done = manage(
        "check", SECRET_KEY="a-long-random-string-" + "x" * 40, ALLOWED_HOSTS="segflow.example.com"
    )
    assert done.returncode == 0, done.stderr
