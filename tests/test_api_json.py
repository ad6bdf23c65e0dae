"""The API reads and writes JSON with orjson, and nobody can tell: for any body, the parser
answers what Python's json module made of it (the same values, or the same error), and for any
answer, the renderer writes the bytes DRF's JSONRenderer wrote."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ParseError
from rest_framework.renderers import JSONRenderer

from segflow.api.parsers import _strict_json_slowly, strict_json
from segflow.api.renderers import FastJSONRenderer


def typed(value):
    """`value` with its types spelled out: 1, 1.0 and True are equal in Python, not here."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def outcome(parse, body: bytes):
    try:
        return typed(parse(body, "utf-8"))
    except ParseError as exc:
        return ("error", str(exc.detail))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

# Pieces of JSON text, valid and not, glued at random: near-misses of JSON are where parsers part.
fragments = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"',
        "\\",
        "\\u",
        "d800",
        "dc00",
        "\\ud83d\\ude00",
        "0",
        "-",
        "1",
        "9" * 19,
        ".",
        "e",
        "E+",
        "400",
        "NaN",
        "Infinity",
        "-Infinity",
        "true",
        "null",
        " ",
        "\t",
        "\n",
        "\x00",
        "\x1f",
        "\u2028",
        "é",
        "\ufeff",
        '"a"',
        "1e-7",
        "01",
    ]  # fmt: skip
)


@settings(max_examples=400)
@given(json_values, st.sampled_from([None, (",", ":"), (", ", ": ")]), st.booleans())
def test_any_json_body_reads_as_the_json_module_read_it(value, separators, ascii_only):
    body = json.dumps(value, separators=separators, ensure_ascii=ascii_only).encode()
    assert outcome(strict_json, body) == outcome(_strict_json_slowly, body)


@settings(max_examples=600)
@given(st.lists(fragments, max_size=12).map("".join), st.sampled_from(["utf-8", "utf-16"]))
def test_any_text_reads_or_is_refused_as_the_json_module_did(text, encoding):
    body = text.encode(encoding, "surrogatepass")
    assert outcome(strict_json, body) == outcome(_strict_json_slowly, body)


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_any_bytes_read_or_are_refused_as_the_json_module_did(body):
    assert outcome(strict_json, body) == outcome(_strict_json_slowly, body)


@pytest.mark.parametrize(
    "body, error",
    [
        (b"NaN", "body: malformed JSON (NaN is not valid JSON)"),
        (b"[1e400]", "body: a number is too large to store"),
        (b'"\\ud800"', "body: text must be valid Unicode (it has a lone surrogate)"),
        (b"\xff", "body: not valid utf-8 text"),
        (
            b"{",
            "body: malformed JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
    ],  # fmt: skip
)
def test_refused_bodies_say_what_they_always_said(body, error):
    with pytest.raises(ParseError) as caught:
        strict_json(body, "utf-8")
    assert str(caught.value.detail) == error


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18, 10**19, 10**40],
)
def test_integers_at_and_beyond_64_bits_read_as_the_json_module_reads_them(number):
    body = json.dumps({"events": [{"n": number, "list": [1, number, "x"]}]}).encode()
    read = strict_json(body, "utf-8")
    assert read == json.loads(body)
    assert type(read["events"][0]["n"]) is int


def test_integers_beyond_64_bits_stay_integers():
    assert strict_json(b'{"n": 123456789012345678901234567890}', "utf-8") == {
        "n": 123456789012345678901234567890
    }


# UTC, no zone, fixed offsets in whole minutes (as senders write them) and in seconds.
zones = (
    st.just(UTC)
    | st.none()
    | st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    | st.integers(-86399, 86399).map(lambda s: timezone(timedelta(seconds=s)))
)
answers = st.recursive(
    json_values
    | st.datetimes(timezones=zones)
    | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.date())
    | st.timedeltas(max_value=timedelta(days=9999), min_value=timedelta(days=-9999))
    | st.sampled_from(["\u2028", "\u2029", "a\u2028b", "1e-5", "0.00001"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(answers)
def test_any_answer_is_written_byte_for_byte_as_drf_wrote_it(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_one_instant_is_written_in_each_zone_it_was_given_in():
    utc = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    data = {"events": [{"at": utc, "again": utc}, {"at": paris}, {"at": utc.replace(tzinfo=None)}]}
    rendered = FastJSONRenderer().render(data)
    assert rendered == JSONRenderer().render(data)
    assert rendered.count(b"2026-03-02T09:00:00.123456Z") == 2
    assert b"2026-03-02T10:00:00.123456+01:00" in rendered


@pytest.mark.parametrize(
    "value",
    [1e-5, 1e-7, 1e-4, 1e16, 1e22, 5e-324, -0.0, 0.1, 2**63, 2**64, -(2**63) - 1, math.pi],
)
def test_floats_and_large_integers_are_written_as_python_writes_them(value):
    data = {"value": value, "at": datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)}
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_an_indent_asked_for_is_honoured():
    data = {"a": [1, 2]}
    media_type = "application/json; indent=2"
    assert FastJSONRenderer().render(data, media_type) == JSONRenderer().render(data, media_type)
    assert b"\n  " in FastJSONRenderer().render(data, media_type)
