"""The client installs with pip into an app's environment, alone: `segflow-client` from
clients/python, the standard library its only dependency."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# No database here: the SQLite pass of `python3 dev.py test` runs these; the MySQL one need not.
pytestmark = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("mysql"), reason="uses no database"
)

# Run in the fresh environment, away from the checkout: the installed client, and nothing else.
CHECK = """
import importlib.metadata, json, sys
import segflow_client
from segflow_client import Client, SegflowConnectionError

client = Client(url="http://127.0.0.1:9", api_key="sf_test")  # a port nothing answers on
answered = True
try:
    client.get_user("jane")
except SegflowConnectionError:
    answered = False
print(json.dumps({
    "file": segflow_client.__file__,
    "version": segflow_client.__version__,
    "requires": importlib.metadata.requires("segflow-client"),
    "distributions": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    "django": "django" in sys.modules,
    "answered": answered,
}))
"""

# setuptools builds a wheel offline if it has bdist_wheel: its own from 70.1, else the `wheel`
# package's. Without it, pip builds in isolation, fetching setuptools (then kept in pip's cache).
CAN_BUILD_OFFLINE = """
import importlib.util, sys
import setuptools
version = tuple(int(part) for part in setuptools.__version__.split(".")[:2])
sys.exit(0 if version >= (70, 1) or importlib.util.find_spec("wheel") else 1)
"""


def test_the_client_installs_with_pip_into_a_fresh_environment_with_no_dependencies(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "app-venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = str(venv / "bin" / "python")

    offline = subprocess.run([python, "-c", CAN_BUILD_OFFLINE], env=env).returncode == 0
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if offline:
        install += ["--no-index", "--no-build-isolation"]
    # pip builds a local folder in place: build from a copy (the link followed, as in an sdist),
    # so that the checkout is left as it was.
    source = tmp_path / "segflow-client"
    shutil.copytree(
        ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    done = subprocess.run(
        [*install, str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    done = subprocess.run(
        [python, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)

    installed = Path(found["file"])
    assert not installed.is_symlink()
    assert installed.resolve().is_relative_to(venv.resolve())
    assert installed.read_bytes() == (ROOT / "segflow" / "client.py").read_bytes()
    assert found["version"]
    assert found["requires"] is None  # no dependencies
    # What a fresh environment has, and the client: nothing came along with it.
    assert set(found["distributions"]) <= {"pip", "setuptools", "segflow-client"}
    assert found["django"] is False
    assert found["answered"] is False
