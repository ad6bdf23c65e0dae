"""Checks on what the API receives. Each failure names the field and the problem."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from segflow.addresses import EXAMPLE, NotOneAddress, parse_address
from segflow.users import NewEvent

from .errors import InvalidInput

MAX_ID_LENGTH = 255
# ASCII's control characters: below space, and DEL.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# MariaDB refuses JSON nested deeper than 32 levels; stay well inside it.
MAX_ATTRIBUTE_DEPTH = 16


def body_object(
    data: Any, allowed: set[str], required: set[str] = frozenset(), field: str = ""
) -> dict:
    """`data` as a JSON object with only `allowed` keys and all `required` ones; `field` names
    where it sits in the body (nothing for the body itself)."""
    if isinstance(data, dict) and data.keys() <= allowed and data.keys() >= required:
        return data
    if not isinstance(data, dict):
        raise InvalidInput(field or "body", f"must be a JSON object, got {json_type(data)}")
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
        raise InvalidInput(field, f"must be a string, got {json_type(value)}")
    if not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if _CONTROL_CHARACTER.search(value):
        raise InvalidInput(field, "must not contain control characters")
    return value


def message_id(value: Any, field: str = "message_id") -> str | None:
    """The sender's id for an event (optional): events with an id already stored are duplicates."""
    return None if value is None else identifier(value, field)


EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def event_time(value: Any, field: str = "timestamp") -> datetime | None:
    """When an event happened (optional): ISO 8601 with a UTC offset, not far in the future."""
    if value is None:
        return None
    example = "like 2026-03-01T09:30:00Z or 2026-03-01T10:30:00+01:00"
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be an ISO 8601 string, {example}; got {json_type(value)}")
    shown = value if len(value) <= 40 else value[:40] + "…"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, f"must be an ISO 8601 time, {example}; got {shown!r}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInput(field, f"must have a UTC offset (Z or +hh:mm), {example}; got {shown!r}")
    try:
        when = when.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(field, f"is out of range; got {shown!r}") from None
    if when < EARLIEST_EVENT_TIME:
        raise InvalidInput(field, f"must not be before 1970-01-01T00:00:00Z; got {shown!r}")
    ahead = settings.SEGFLOW_MAX_EVENT_FUTURE_SECONDS
    if when > timezone.now() + timedelta(seconds=ahead):
        raise InvalidInput(
            field,
            f"must not be more than {ahead} seconds in the future "
            f"(SEGFLOW_MAX_EVENT_FUTURE_SECONDS); got {shown!r}",
        )
    return when


def attributes(value: Any, field: str = "attributes") -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object, got {json_type(value)}")
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
        raise InvalidInput(f"{field}.email", f"must be a string, got {json_type(email)}")
    try:
        parse_address(email)
    except NotOneAddress as exc:
        raise InvalidInput(
            f"{field}.email",
            f"must be one email address, such as {EXAMPLE} (no name, no list): {exc}",
        ) from None
    return value


_NESTING = (dict, list)


def _depth(value: Any) -> int:
    if isinstance(value, dict):  # (most attributes: no object or array inside)
        for item in value.values():
            if isinstance(item, _NESTING):
                break
        else:
            return 2 if value else 1
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def json_type(value: Any) -> str:
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


EVENT_FIELDS = {"name", "attributes", "message_id", "timestamp"}


def event(item: dict, user_id: str, field: str = "") -> NewEvent:
    """An event from a body object already checked for its keys (EVENT_FIELDS); `field` names
    where it sits in the body (nothing for the body itself)."""
    prefix = f"{field}." if field else ""
    return NewEvent(
        user_id=user_id,
        name=identifier(item["name"], prefix + "name"),
        attributes=attributes(item.get("attributes", {}), prefix + "attributes"),
        message_id=message_id(item.get("message_id"), prefix + "message_id"),
        timestamp=event_time(item.get("timestamp"), prefix + "timestamp"),
    )


def posted_event(data: Any, user_id: str) -> NewEvent:
    """The body of POST /api/users/{id}/events, for the user of the path, as an event."""
    identifier(user_id, "id")
    return event(body_object(data, EVENT_FIELDS, {"name"}), user_id)


def user_write(data: Any, user_id: str) -> dict:
    """The attributes of a PUT or PATCH of /api/users/{id}, for the user of the path."""
    identifier(user_id, "id")
    return user_attributes(body_object(data, {"attributes"}, {"attributes"})["attributes"])


def path_safe_user_id(value: Any, field: str) -> str:
    """A user id from a body: one that can be read, changed and deleted by its path later."""
    user_id = identifier(value, field)
    if "/" in user_id:
        raise InvalidInput(field, "user ids cannot contain '/'")
    return user_id


def event_batch(data: Any, limit: int) -> list[NewEvent]:
    """The body of POST /api/events as events, all checked."""
    body = body_object(data, {"events"}, {"events"})
    items = body["events"]
    if not isinstance(items, list) or not items:
        raise InvalidInput("events", "must be a non-empty JSON array of events")
    if len(items) > limit:
        raise InvalidInput("events", f"must hold at most {limit} events, got {len(items)}")
    events = []
    allowed, required = EVENT_FIELDS | {"user_id"}, {"user_id", "name"}
    for n, item in enumerate(items):
        field = f"events[{n}]"
        body_object(item, allowed, required, field=field)
        user_id = path_safe_user_id(item["user_id"], f"{field}.user_id")
        events.append(event(item, user_id, field))
    return events
