"""`python3 dev.py test`: says up front how long its passes take, and can run SQLite alone.

dev.py is run with its own steps (the virtual environment, pip, pytest) replaced by recorders."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def dev(monkeypatch):
    spec = importlib.util.spec_from_file_location("segflow_dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.runs, module.redis = [], []
    monkeypatch.setattr(module, "ensure_venv", lambda: None)
    monkeypatch.setattr(module, "ensure_installed", lambda extras: None)
    monkeypatch.setattr(module, "answers", lambda url, port: True)  # MySQL and Redis answer

    def run(*args, env=None):
        module.runs.append(([str(a) for a in args], (env or {}).get("DATABASE_URL")))
        module.redis.append((env or {}).get("SEGFLOW_TEST_REDIS_URL"))
        return 0

    class Finished:
        def poll(self):
            return 0

        def wait(self):
            return 0

    def start(*args, env, output):
        run(*args, env=env)
        return Finished()

    monkeypatch.setattr(module, "run", run)
    monkeypatch.setattr(module, "start", start)
    monkeypatch.delenv("SEGFLOW_TEST_SQLITE_ONLY", raising=False)
    return module


def test_both_passes_and_how_long_each_takes_are_said_first(dev, capsys):
    assert dev.test(["-x"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("[segflow] The whole suite runs twice, on SQLite (about 6 minutes)")
    assert "and on MySQL/MariaDB (about 12 minutes, 6 of them for the tests that" in said[0]
    assert "both at once" in said[0]
    assert "python3 dev.py test --sqlite-only" in said[0]
    lint, *passes = dev.runs
    assert lint[0][0].endswith("lint-imports")  # the import contracts come first
    assert [database for _, database in passes] == [None, dev.MYSQL_TEST_URL]
    # At the same time, so each pass has Redis databases of its own (a test uses n and n + 1).
    assert dev.redis[1:] == [dev.REDIS_TEST_URL, dev.redis_database(dev.REDIS_TEST_URL, 2)]
    assert dev.redis_database("redis://127.0.0.1:6379/11", 2) == "redis://127.0.0.1:6379/13"
    assert dev.redis_database("redis://:secret@cache:6380", 2) == "redis://:secret@cache:6380/2"


@pytest.mark.parametrize("how", ["option", "environment"])
def test_sqlite_only_runs_the_first_pass_alone(dev, capsys, monkeypatch, how):
    args = ["tests/test_push.py", "-x"]
    if how == "option":
        args.insert(1, "--sqlite-only")
    else:
        monkeypatch.setenv("SEGFLOW_TEST_SQLITE_ONLY", "1")

    assert dev.test(args) == 0

    lint, (command, database), *others = dev.runs
    assert lint[0][0].endswith("lint-imports")
    assert others == [] and database is None
    assert command[-2:] == ["tests/test_push.py", "-x"]  # the option is not pytest's
    said = capsys.readouterr().out
    assert "Tests on SQLite (about 6 minutes for the whole suite)" in said
    assert "MySQL" not in said


def test_without_chromium_the_browser_tests_are_left_out_and_it_says_so(dev, capsys):
    dev.CHROMIUM = "/nowhere/chromium"
    assert dev.test([]) == 0
    said = capsys.readouterr().out
    assert "No Chromium at /nowhere/chromium: the admin's browser tests are left out" in said
    _, (sqlite, _), (mysql, _) = dev.runs
    assert marks(sqlite) == "not mysql_only and not browser"
    assert marks(mysql) == "not browser"


def test_with_chromium_the_browser_tests_run(dev, capsys, tmp_path):
    dev.CHROMIUM = str(tmp_path)  # there
    assert dev.test([]) == 0
    assert "Chromium" not in capsys.readouterr().out
    _, (sqlite, _), (mysql, _) = dev.runs
    assert marks(sqlite) == "not mysql_only"
    assert marks(mysql) is None


def marks(command: list[str]) -> str | None:
    """The -m expression given to pytest (after `python -m pytest`), if any."""
    rest = command[command.index("pytest") + 1 :]
    return rest[rest.index("-m") + 1] if "-m" in rest else None
