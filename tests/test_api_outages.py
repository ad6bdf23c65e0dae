"""Under /api/ every answer is JSON, also when something breaks: an outage of the database or the
broker is a 503 with Retry-After, anything unexpected a 500 with an error id that is in the log.
`/api/health` is a cheap liveness answer; `/api/ready` checks the database and the broker."""

from __future__ import annotations

import logging
import re
import socket

import pytest
from django.db import InterfaceError, OperationalError, connections
from kombu.exceptions import OperationalError as BrokerError
from rest_framework.test import APIClient

from segflow import users as user_service
from segflow.models import User

JSON = "application/json"


def json_error(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == JSON, response.content
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return body["error"]


def assert_unavailable(response, what: str) -> None:
    error = json_error(response, 503)
    assert error.startswith(f"{what}:"), error
    assert int(response["Retry-After"]) > 0


@pytest.fixture
def client(api) -> APIClient:
    api.raise_request_exception = False  # as a real server answers: no exception in the test
    return api


def raising(exc: Exception):
    def fail(*args, **kwargs):
        raise exc

    return fail


# -- Outages are a JSON 503 with Retry-After -----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "exc",
    [
        OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' (111)"),
        InterfaceError(0, ""),
    ],
    ids=["refused", "connection gone"],
)
def test_a_database_outage_while_checking_the_api_key_is_a_json_503(client, monkeypatch, exc):
    monkeypatch.setattr("segflow.api.auth.find_api_key", raising(exc))
    response = client.put("/api/users/jane", {"attributes": {}}, format="json")
    assert_unavailable(response, "database")
    assert "Can't connect" not in response.json()["error"]  # no server details for the caller


@pytest.mark.django_db
def test_a_database_outage_in_a_write_is_a_json_503_and_nothing_is_stored(client, monkeypatch):
    monkeypatch.setattr(user_service.Event, "save", raising(OperationalError(2006)))
    response = client.post("/api/users/jane/events", {"name": "purchase"}, format="json")
    assert_unavailable(response, "database")
    assert not User.objects.filter(pk="jane").exists()


@pytest.mark.django_db
def test_a_broker_outage_that_reaches_a_view_is_a_json_503(client, monkeypatch):
    monkeypatch.setattr(user_service, "put_user", raising(BrokerError("Connection refused")))
    response = client.put("/api/users/jane", {"attributes": {}}, format="json")
    assert_unavailable(response, "broker")


class FailingMiddleware:
    """Stands for any middleware that hits the database before the view."""

    error: Exception = OperationalError(2013, "Lost connection to server during query")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise self.error


@pytest.fixture
def failing_middleware(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.FailingMiddleware"]
    yield FailingMiddleware
    FailingMiddleware.error = OperationalError(2013, "Lost connection to server during query")


@pytest.mark.django_db
def test_an_outage_in_a_middleware_is_a_json_503_too(client, failing_middleware):
    assert_unavailable(client.get("/api/users/jane"), "database")
    assert_unavailable(APIClient(raise_request_exception=False).get("/api/nope"), "database")


@pytest.mark.django_db
def test_an_error_in_a_middleware_is_a_json_500_with_an_id_in_the_log(
    client, failing_middleware, caplog
):
    failing_middleware.error = RuntimeError("middleware bug")
    with caplog.at_level(logging.ERROR):
        response = client.get("/api/users/jane")
    error_id = assert_logged_500(response, caplog)
    assert "middleware bug" not in response.json()["error"]
    assert error_id


@pytest.mark.django_db
def test_outside_the_api_django_answers_as_before(client, failing_middleware):
    failing_middleware.error = RuntimeError("admin bug")
    response = client.get("/admin/login/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


# -- Anything unexpected is a JSON 500 with an error id that is in the log -----------------------


def assert_logged_500(response, caplog) -> str:
    error = json_error(response, 500)
    error_id = response.json()["error_id"]
    assert re.fullmatch(r"[0-9a-f]{12,32}", error_id), error_id
    assert error_id in error
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info, "logged with its traceback"
    return error_id


@pytest.mark.django_db
def test_an_unexpected_error_in_a_view_is_a_json_500_with_an_id_that_is_in_the_log(
    client, monkeypatch, caplog
):
    monkeypatch.setattr(user_service, "put_user", raising(ZeroDivisionError("a bug")))
    with caplog.at_level(logging.ERROR):
        response = client.put("/api/users/jane", {"attributes": {}}, format="json")
    assert_logged_500(response, caplog)
    assert "ZeroDivisionError" not in response.json()["error"]


@pytest.mark.django_db
def test_in_tests_an_unexpected_error_still_reaches_the_test(api, monkeypatch):
    """The test client re-raises what a view raised, so a failing test shows the traceback."""
    monkeypatch.setattr(user_service, "put_user", raising(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        api.put("/api/users/jane", {"attributes": {}}, format="json")


# -- Health and readiness ------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_is_a_liveness_answer_that_does_not_touch_the_database(
    django_assert_num_queries,
):
    with django_assert_num_queries(0):
        response = APIClient().get("/api/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_answers_200_when_the_database_answers():
    response = APIClient().get("/api/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def unreachable_database(monkeypatch) -> None:
    """Point new connections at a database that is not there (the open ones keep working)."""
    settings_dict = connections["default"].settings_dict
    if connections["default"].vendor == "sqlite":
        monkeypatch.setitem(settings_dict, "NAME", "/nonexistent/folder/segflow.sqlite3")
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setitem(settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(settings_dict, "PORT", str(port))


@pytest.mark.django_db
def test_ready_answers_503_naming_the_database_when_it_does_not_answer(monkeypatch, caplog):
    unreachable_database(monkeypatch)
    with caplog.at_level(logging.WARNING):
        response = APIClient().get("/api/ready")
    assert_unavailable(response, "database")
    assert response.json()["status"] == "not ready"
    assert response.json()["checks"] == {"database": "down"}
    assert "database" in caplog.text


@pytest.mark.django_db
def test_ready_checks_the_broker_in_production_mode(settings, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    settings.SEGFLOW_TASKS_INLINE = False
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    response = APIClient().get("/api/ready")
    assert_unavailable(response, "broker")
    assert response.json()["checks"] == {"database": "ok", "broker": "down"}


@pytest.mark.django_db
@pytest.mark.redis
def test_ready_answers_200_with_a_broker_that_answers(settings):
    from .deployment import REDIS_URL

    settings.SEGFLOW_TASKS_INLINE = False
    settings.CELERY_BROKER_URL = REDIS_URL
    response = APIClient().get("/api/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
