"""The API's OpenAPI schema (segflow/api/openapi.py): generated without a warning and valid;
served at /api/schema/ and shown at /api/docs/ without a key, with Swagger UI's own files; the
answers that random requests rarely reach (a body too large, an outage, a bug) are the ones it
describes; and the examples in docs/api.md match it.

tests/test_openapi_live.py sends requests generated from it to a live server."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client
from django.urls import URLPattern
from drf_spectacular.drainage import GENERATOR_STATS
from jsonschema import Draft202012Validator, FormatChecker
from rest_framework.test import APIClient
from rest_framework.views import APIView

from segflow.api import urls, views
from segflow.api_keys import create_api_key

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json"


@pytest.fixture(scope="module")
def schema() -> dict:
    response = Client().get("/api/schema/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == JSON
    return response.json()


# -- Checking a body against the schema ----------------------------------------------------------


def json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a `null` type."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {}
    for key, value in node.items():
        if key == "properties":
            converted[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key != "nullable":
            converted[key] = json_schema(value)
    if node.get("nullable"):
        if isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


# The formats the schema uses, checked without the optional packages jsonschema would use.
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@FORMATS.checks("uri")
def _uri(value) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme and urlsplit(value).netloc)


def problems(schema: dict, node: dict, value) -> list[str]:
    """What is wrong with `value` as an instance of `node` (a schema from `schema`)."""
    document = {"allOf": [json_schema(node)], "components": json_schema(schema["components"])}
    validator = Draft202012Validator(document, format_checker=FORMATS)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(the body)'}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def operation(schema: dict, method: str, template: str) -> dict:
    assert template in schema["paths"], f"{template} is not in the schema"
    item = schema["paths"][template]
    assert method.lower() in item, f"{method} {template} is not in the schema"
    return item[method.lower()]


def assert_described(schema: dict, method: str, template: str, response) -> None:
    """The answer is one the schema gives for this operation: its status, headers and body."""
    answers = operation(schema, method, template)["responses"]
    status = str(response.status_code)
    assert status in answers, f"{method} {template} answered {status}, not described"
    described = answers[status]
    for name, header in described.get("headers", {}).items():
        if header.get("required"):
            assert response.has_header(name), f"{status} without its {name} header"
    if "content" not in described:
        assert response.content == b""
        return
    assert response["Content-Type"] == JSON
    node = described["content"][JSON]["schema"]
    assert problems(schema, node, response.json()) == [], response.content


# -- The schema ----------------------------------------------------------------------------------


def test_the_schema_is_valid_and_generated_without_a_warning():
    # As `manage.py spectacular --validate --fail-on-warn` run by hand: a warning fails it.
    GENERATOR_STATS.reset()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


def routed_operations() -> set[str]:
    """Every method of every API view routed under /api/ and /v1/, as `METHOD /path/{param}`."""
    found = set()
    for prefix, patterns in (("/api/", urls.urlpatterns), ("/v1/", urls.v1_urlpatterns)):
        for pattern in patterns:
            view = getattr(pattern.callback, "cls", None)
            if not isinstance(pattern, URLPattern) or view is None:
                continue  # the catch-all 404s: plain functions
            if not issubclass(view, APIView) or view is views.EmptyIdView:
                continue
            if view.__module__.startswith("drf_spectacular"):
                continue  # the schema and the docs page themselves
            path = prefix + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
            for method in ("get", "put", "patch", "delete", "post"):
                if hasattr(view, method):
                    found.add(f"{method.upper()} {path}")
    return found


def test_the_schema_describes_every_endpoint(schema):
    described = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    assert described == routed_operations()
    assert len(described) == 19


def test_every_operation_describes_the_errors_it_can_give(schema):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            answers = op["responses"]
            expected = {"500"}
            if op.get("security") != [{}]:
                expected |= {"401", "403", "503"}
                assert answers["401"]["headers"]["WWW-Authenticate"]["required"], where
                assert answers["503"]["headers"]["Retry-After"]["required"], where
            if "requestBody" in op:
                expected |= {"400", "415"} | ({"413"} if path.startswith("/api/") else set())
            if "{user_id}" in path:
                expected |= {"400", "404"}
            assert expected <= set(answers), (where, expected - set(answers))
            for status, answer in answers.items():
                if status.startswith(("4", "5")):
                    body = answer["content"][JSON]["schema"]
                    name = body["$ref"].rsplit("/", 1)[1]
                    component = schema["components"]["schemas"][name]
                    assert "error" in component["required"], (where, status)


def test_the_schemes_say_how_to_send_a_key(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http" and schemes["apiKey"]["scheme"] == "bearer"
    assert schemes["segmentWriteKey"]["scheme"] == "basic"
    assert operation(schema, "PUT", "/api/users/{user_id}")["security"] == [{"apiKey": []}]
    assert operation(schema, "POST", "/v1/track")["security"] == [
        {"segmentWriteKey": []},
        {"apiKey": []},
    ]
    assert operation(schema, "GET", "/api/health")["security"] == [{}]


def test_the_schemas_own_examples_match_it(schema):
    checked = 0
    for item in schema["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {}).get(JSON, {})
            for example in content.get("examples", {}).values():
                assert problems(schema, content["schema"], example["value"]) == [], example
                checked += 1
    assert checked >= 8


# -- Served without a key; the docs page with its own files --------------------------------------


def test_the_schema_needs_no_key_and_comes_in_yaml_too():
    client = Client(HTTP_AUTHORIZATION="Bearer sf_not-a-key")  # a bad key is no matter
    assert client.get("/api/schema/").json()["openapi"].startswith("3.0")
    response = client.get("/api/schema/?format=yaml")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.0")


def test_the_docs_page_loads_swagger_ui_from_segflow_itself():
    client = Client()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "SwaggerUIBundle" in html
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", html), "nothing from a CDN"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert {Path(a).name for a in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    }
    for asset in assets:
        assert asset.startswith("/static/"), asset
        response = client.get(asset)  # served by whitenoise, as in production
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, asset
    kinds = {Path(a).suffix: client.get(a)["Content-Type"] for a in assets}
    assert kinds[".js"].startswith("text/javascript") and kinds[".css"].startswith("text/css")
    schema_url = re.search(r'url: "([^"]+)"', html)[1]
    assert schema_url == "/api/schema/"
    assert client.get(schema_url).json()["info"]["title"] == "segflow API"


@pytest.mark.django_db
def test_the_api_lists_the_schema_and_the_docs_page(api):
    endpoints = api.get("/api/").json()["endpoints"]
    assert "GET /api/schema/" in endpoints and "GET /api/docs/" in endpoints
    assert "GET /api/schema/" in api.get("/api/no-such-thing").json()["endpoints"]


# -- Answers random requests rarely reach ---------------------------------------------------------


def raising(exc: Exception):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.fixture
def client(api) -> APIClient:
    api.raise_request_exception = False  # as a real server answers a bug: a 500, no exception
    return api


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.mark.django_db
def test_refusals_are_described(schema, client):
    def check(method, template, response, status):
        assert response.status_code == status, response.content
        assert_described(schema, method, template, response)

    user = "/api/users/{user_id}"
    check("PUT", user, APIClient().put("/api/users/jane", {}, format="json"), 401)
    _, push_key = create_api_key("ci", scope="push")
    pusher = APIClient(HTTP_AUTHORIZATION=f"Bearer {push_key}")
    check("GET", user, pusher.get("/api/users/jane"), 403)
    check("GET", user, client.get("/api/users/nobody"), 404)
    check("GET", user, client.get("/api/users/a%2Fb"), 404)  # the catch-all, with `endpoints`
    check("PATCH", user, client.patch("/api/users/nobody", {"attributes": {}}, format="json"), 404)
    check("PUT", user, client.put("/api/users/jane", {"attributes": []}, format="json"), 400)
    check("PUT", user, client.put("/api/users/jane", "{", content_type=JSON), 400)  # no fields
    check("PUT", user, client.put("/api/users/jane", "a=1", content_type="text/plain"), 415)
    big = json.dumps({"attributes": {"a": "x" * 300_000}})
    check("PUT", user, client.put("/api/users/jane", big, content_type=JSON), 413)
    check("PUT", user, client.put("/api/users/jane", {"attributes": {}}, format="json"), 201)
    events = "/api/users/{user_id}/events"
    check("GET", events, client.get("/api/users/jane/events?page_size=1"), 200)
    check("GET", events, client.get("/api/users/jane/events?page=0"), 400)
    check("POST", events, client.post("/api/users/jane/events", {}, format="json"), 400)
    check("POST", "/api/events", client.post("/api/events", {"events": []}, format="json"), 400)
    check("POST", "/api/push", client.post("/api/push", {}, format="json"), 403)
    check("POST", "/api/push/rollback", pusher.post("/api/push/rollback", {}, format="json"), 403)


@pytest.mark.django_db
def test_the_segment_endpoints_refusals_are_described(schema, client):
    _, key = create_api_key("segment")
    segment = APIClient(HTTP_AUTHORIZATION=basic(key))
    track = "/v1/track"

    def check(response, status):
        assert response.status_code == status, response.content
        assert_described(schema, "POST", track, response)

    check(APIClient().post(track, {}, format="json"), 401)
    check(segment.post(track, {"userId": "jane"}, format="json"), 400)
    check(segment.post(track, "x", content_type="application/xml"), 415)
    check(segment.post(track, "{}", content_type=JSON, HTTP_CONTENT_ENCODING="br"), 415)
    check(segment.post(track, {"userId": "jane", "event": "login"}, format="json"), 200)
    assert APIClient().post(track, {}, format="json")["WWW-Authenticate"].startswith("Basic")


@pytest.mark.django_db
def test_an_outage_is_a_described_503(schema, client, monkeypatch):
    monkeypatch.setattr("segflow.api.auth.find_api_key", raising(OperationalError(2003)))
    response = client.put("/api/users/jane", {"attributes": {}}, format="json")
    assert response.status_code == 503
    assert_described(schema, "PUT", "/api/users/{user_id}", response)


@pytest.mark.django_db
def test_a_readiness_failure_is_a_described_503(schema, monkeypatch):
    monkeypatch.setattr(views, "_database_problem", lambda timeout: "OperationalError: down")
    response = Client().get("/api/ready")
    assert response.status_code == 503
    assert_described(schema, "GET", "/api/ready", response)
    assert_described(schema, "GET", "/api/health", Client().get("/api/health"))


@pytest.mark.django_db
def test_a_bug_is_a_described_500(schema, client, monkeypatch):
    client.put("/api/users/jane", {"attributes": {}}, format="json")
    monkeypatch.setattr(views, "user_detail", raising(RuntimeError("a bug")))
    response = client.get("/api/users/jane")
    assert response.status_code == 500
    assert_described(schema, "GET", "/api/users/{user_id}", response)


# -- The examples in docs/api.md -----------------------------------------------------------------

API_DOC = ROOT / "docs" / "api.md"
# <!-- example: PUT /api/users/{user_id} request --> (or a status) right before a code block.
EXAMPLE = re.compile(
    r"<!-- example: (?P<method>[A-Z]+) (?P<path>\S+) (?P<kind>request|\d{3}) -->\n"
    r"```(?P<lang>\w*)\n(?P<text>.*?)\n```",
    re.S,
)


def doc_examples() -> list[tuple[str, str, str, str]]:
    text = API_DOC.read_text()
    found = [(m["method"], m["path"], m["kind"], m["text"]) for m in EXAMPLE.finditer(text)]
    assert len(found) == text.count("<!-- example:"), "a tag not right before a code block"
    return found


EXAMPLES = doc_examples()


def test_the_docs_show_a_checked_example_of_each_main_endpoint():
    tagged = {(method, path, kind) for method, path, kind, _ in EXAMPLES}
    for method, path, answer in [
        ("PUT", "/api/users/{user_id}", "201"),
        ("PATCH", "/api/users/{user_id}", "200"),
        ("GET", "/api/users/{user_id}", None),
        ("DELETE", "/api/users/{user_id}", None),
        ("POST", "/api/users/{user_id}/events", "201"),
        ("GET", "/api/users/{user_id}/events", "200"),
        ("POST", "/api/events", "201"),
        ("GET", "/api/", "200"),
        ("GET", "/api/health", "200"),
        ("GET", "/api/ready", "200"),
        ("POST", "/v1/track", "200"),
    ]:
        assert (method, path, "request") in tagged, (method, path)
        assert answer is None or (method, path, answer) in tagged, (method, path, answer)


@pytest.mark.parametrize(
    "method, path, kind, text", EXAMPLES, ids=[f"{m} {p} {k}" for m, p, k, _ in EXAMPLES]
)
def test_each_example_in_the_docs_matches_the_schema(schema, method, path, kind, text):
    op = operation(schema, method, path)
    if kind != "request":
        described = op["responses"][kind]
        node = described["content"][JSON]["schema"]
        assert problems(schema, node, json.loads(text)) == []
        return
    # A curl command: its method and URL are this operation's, and its body (-d '...') is one
    # the operation takes.
    sent = re.search(r"-X ([A-Z]+)", text)
    body = re.search(r"-d '(.*?)'", text, re.S)
    assert (sent[1] if sent else "POST" if body else "GET") == method
    url = re.search(r'"\$SEGFLOW(/[^"?]*)', text)[1]
    pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
    assert re.fullmatch(pattern, url), (url, path)
    if "requestBody" not in op:
        assert body is None
        return
    node = op["requestBody"]["content"][JSON]["schema"]
    assert problems(schema, node, json.loads(body[1])) == []
