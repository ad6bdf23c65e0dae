"""Requests generated from the OpenAPI schema (schemathesis), sent to a live server: no answer is
a 5xx, and every answer is one the schema describes: its status, its headers, its body.

The key is of the scope `ingest`, so the push endpoints answer 403 (and push nothing), as they
must to such a key. SEGFLOW_OPENAPI_EXAMPLES sets how many requests each operation gets (20)."""

from __future__ import annotations

import base64
import os

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from segflow.api_keys import create_api_key
from segflow.users import put_user

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("SEGFLOW_OPENAPI_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Every operation the schema describes.
OPERATIONS = [
    (method.upper(), path)
    for path, item in SchemaGenerator().get_schema(public=True)["paths"].items()
    for method in item
]
# A user who exists when each request is sent, so that reads and updates find someone too.
KNOWN = "jane doeé"  # a space and an accent, encoded in the path


@pytest.fixture(scope="module")
def served_schema(live_server, django_db_blocker):
    # Fetched once, before any test's database is set up: the server may open its connection.
    with django_db_blocker.unblock():
        return schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")


@pytest.fixture
def key() -> str:
    _, key = create_api_key("schemathesis")  # scope ingest
    return key


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_answer_is_one_the_schema_describes(served_schema, pushed, key, method, path):
    pushed()  # the example config, so that writes run segments, campaigns and emails
    operation = served_schema[path][method]
    cases = [operation.as_strategy(mode) for mode in GenerationMode]
    if "{user_id}" in path:
        cases.append(operation.as_strategy(path_parameters={"user_id": KNOWN}))
    if path.startswith("/v1/"):  # as Segment's libraries send the key: Basic, key as user name
        authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    else:
        authorization = f"Bearer {key}"

    @given(case=st.one_of(cases))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def answer_is_described(case):
        put_user(KNOWN, {"email": "jane@example.com", "plan": "pro"})
        case.call_and_validate(headers={"Authorization": authorization}, checks=CHECKS)

    answer_is_described()
