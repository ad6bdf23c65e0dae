"""API keys are read from the database at most once per SEGFLOW_API_KEY_CACHE_SECONDS in each
process, and that is the bound: a key revoked anywhere is refused everywhere that long after,
and at once in the process that revoked it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from segflow import api_keys
from segflow.api_keys import create_api_key, find_api_key, forget_api_keys, revoke_api_keys
from segflow.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent


class Monotonic:
    """The cache's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache_clock(monkeypatch, settings) -> Monotonic:
    settings.SEGFLOW_API_KEY_CACHE_SECONDS = 1.0
    clock = Monotonic()
    monkeypatch.setattr(api_keys, "_clock", clock)
    return clock


def revoked_elsewhere(row: ApiKey) -> None:
    """What another process's revocation looks like from here: the row changes, nothing else."""
    ApiKey.objects.filter(pk=row.pk).update(revoked_at=timezone.now())


def key_queries(queries) -> int:
    table = ApiKey._meta.db_table
    return sum(
        q["sql"].startswith("SELECT")
        and f"FROM {table}" in q["sql"].replace('"', "").replace("`", "")
        for q in queries
    )


@pytest.mark.django_db
def test_a_key_is_read_once_per_bound_not_once_per_request(cache_clock):
    _, key = create_api_key("app")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert client.get("/api/users/nobody").status_code == 404
            cache_clock.now += 0.1
    assert key_queries(queries.captured_queries) == 1
    cache_clock.now += 1.0
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/users/nobody").status_code == 404
    assert key_queries(queries.captured_queries) == 1


@pytest.mark.django_db
def test_a_key_revoked_elsewhere_is_refused_once_the_bound_has_passed(cache_clock):
    row, key = create_api_key("app")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/users/nobody").status_code == 404
    revoked_elsewhere(row)
    cache_clock.now += 0.9
    assert client.get("/api/users/nobody").status_code == 404  # still within the bound
    cache_clock.now += 0.1
    response = client.get("/api/users/nobody")
    assert response.status_code == 401
    assert response.json() == {"error": "Authorization: unknown or revoked API key"}


@pytest.mark.django_db
def test_a_key_revoked_in_this_process_is_refused_at_once(cache_clock, admin_client):
    first, first_key = create_api_key("first")
    second, second_key = create_api_key("second")
    for key in (first_key, second_key):
        assert find_api_key(key) is not None
    revoke_api_keys(ApiKey.objects.filter(pk=first.pk))
    assert find_api_key(first_key) is None
    second.revoked_at = timezone.now()
    second.save()  # saving the row forgets it too
    assert find_api_key(second_key) is None


@pytest.mark.django_db
def test_the_admins_revoke_action_is_refused_at_once(cache_clock, admin_client):
    row, key = create_api_key("app")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/users/nobody").status_code == 404
    response = admin_client.post(
        "/admin/segflow/apikey/",
        {"action": "revoke", "_selected_action": [row.pk]},
    )
    assert response.status_code == 302
    assert client.get("/api/users/nobody").status_code == 401


@pytest.mark.django_db
def test_a_bound_of_zero_reads_the_key_every_time(cache_clock, settings):
    settings.SEGFLOW_API_KEY_CACHE_SECONDS = 0
    row, key = create_api_key("app")
    assert find_api_key(key) is not None
    revoked_elsewhere(row)
    assert find_api_key(key) is None


@pytest.mark.django_db
def test_unknown_keys_are_not_kept(cache_clock):
    for n in range(2000):
        assert find_api_key(f"sf_made-up-{n}") is None
    assert api_keys._found == {}


@pytest.mark.django_db
def test_the_last_use_is_still_recorded_about_once_a_minute(cache_clock):
    row, key = create_api_key("app")
    find_api_key(key)
    row.refresh_from_db()
    first_use = row.last_used_at
    assert first_use is not None
    forget_api_keys()
    find_api_key(key)
    row.refresh_from_db()
    assert row.last_used_at == first_use  # not written again within the minute


steps = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.floats(min_value=0, max_value=1.5)),
        st.tuples(st.just("revoke"), st.none()),
        st.tuples(st.just("use"), st.none()),
    ),
    max_size=25,
)


@pytest.mark.django_db
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_for_any_sequence_a_key_works_until_revoked_and_never_past_the_bound(cache_clock, steps):
    forget_api_keys()
    row, key = create_api_key("app")
    revoked_at = None
    for step, seconds in steps:
        if step == "wait":
            cache_clock.now += seconds
        elif step == "revoke" and revoked_at is None:
            revoked_elsewhere(row)
            revoked_at = cache_clock.now
        elif step == "use":
            found = find_api_key(key) is not None
            if revoked_at is None:
                assert found
            elif cache_clock.now >= revoked_at + 1.0:
                assert not found
    row.delete()


CHECKER = """
import json, os, sys, time
import django
django.setup()
from segflow.api_keys import find_api_key
key, until = sys.argv[1], float(sys.argv[2])
while time.time() < until:
    started = time.time()
    print(json.dumps([started, find_api_key(key) is not None]), flush=True)
    time.sleep(0.02)
"""


@pytest.mark.mysql_only
@pytest.mark.django_db(transaction=True)
def test_every_process_refuses_a_revoked_key_within_the_bound():
    """Two processes check a key over and over; it is revoked from a third (this one). Every
    check that starts SEGFLOW_API_KEY_CACHE_SECONDS after the revocation is refused."""
    bound = 0.5
    row, key = create_api_key("app")
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "segflow_project.test_settings",
        "DATABASE_URL": f"mysql://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 3306}/{database['NAME']}",
        "SEGFLOW_API_KEY_CACHE_SECONDS": str(bound),
    }
    start = time.time()
    until = start + 20
    checkers = [
        subprocess.Popen(
            [sys.executable, "-c", CHECKER, key, str(until)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        lines = [[json.loads(checker.stdout.readline())] for checker in checkers]
        revoked_at = time.time()
        revoked_elsewhere(row)
        done_at = time.time()
        for checker, seen in zip(checkers, lines, strict=True):
            while seen[-1][0] < done_at + bound + 0.5:
                seen.append(json.loads(checker.stdout.readline()))
    finally:
        for checker in checkers:
            checker.kill()
            checker.wait()
    for seen in lines:
        assert seen[0] == [seen[0][0], True] and seen[0][0] < revoked_at  # worked before
        late = [ok for started, ok in seen if started >= done_at + bound + 0.05]
        assert late and not any(late), seen
