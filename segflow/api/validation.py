"""Checks on what the API receives. Each failure names the field and the problem."""

from __future__ import annotations

from typing import Any

from segflow.addresses import EXAMPLE, NotOneAddress, parse_address

from .errors import InvalidInput

MAX_ID_LENGTH = 255
# MariaDB refuses JSON nested deeper than 32 levels; stay well inside it.
MAX_ATTRIBUTE_DEPTH = 16


def body_object(
    data: Any, allowed: set[str], required: set[str] = frozenset(), field: str = ""
) -> dict:
    """`data` as a JSON object with only `allowed` keys and all `required` ones; `field` names
    where it sits in the body (nothing for the body itself)."""
    if not isinstance(data, dict):
        raise InvalidInput(field or "body", f"must be a JSON object, got {_json_type(data)}")
    prefix = f"{field}." if field else ""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInput(
            prefix + unknown[0], f"unknown field; expected {', '.join(sorted(allowed))}"
        )
    for name in sorted(required):
        if name not in data:
            raise InvalidInput(prefix + name, "this field is required")
    return data


def identifier(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(field, "must not contain control characters")
    return value


def attributes(value: Any, field: str = "attributes") -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object, got {_json_type(value)}")
    if _depth(value) > MAX_ATTRIBUTE_DEPTH:
        raise InvalidInput(field, f"must not be nested more than {MAX_ATTRIBUTE_DEPTH} levels deep")
    return value


def user_attributes(value: Any, field: str = "attributes") -> dict:
    """A user's attributes: any JSON object, but `email`, if there, is one bare address (or
    null or "" for none), since segflow emails it and nothing else."""
    value = attributes(value, field)
    email = value.get("email")
    if email is None or email == "":
        return value
    if not isinstance(email, str):
        raise InvalidInput(f"{field}.email", f"must be a string, got {_json_type(email)}")
    try:
        parse_address(email)
    except NotOneAddress as exc:
        raise InvalidInput(
            f"{field}.email",
            f"must be one email address, such as {EXAMPLE} (no name, no list): {exc}",
        ) from None
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def event_batch(data: Any, limit: int) -> list[tuple[str, str, dict]]:
    """The body of POST /api/events as (user id, name, attributes) triples, all checked."""
    body = body_object(data, {"events"}, {"events"})
    items = body["events"]
    if not isinstance(items, list) or not items:
        raise InvalidInput("events", "must be a non-empty JSON array of events")
    if len(items) > limit:
        raise InvalidInput("events", f"must hold at most {limit} events, got {len(items)}")
    events = []
    for n, item in enumerate(items):
        field = f"events[{n}]"
        item = body_object(
            item, {"user_id", "name", "attributes"}, {"user_id", "name"}, field=field
        )
        user_id = identifier(item["user_id"], f"{field}.user_id")
        if "/" in user_id:  # such a user could never be read, changed or deleted by its path
            raise InvalidInput(f"{field}.user_id", "user ids cannot contain '/'")
        events.append(
            (
                user_id,
                identifier(item["name"], f"{field}.name"),
                attributes(item.get("attributes", {}), f"{field}.attributes"),
            )
        )
    return events
