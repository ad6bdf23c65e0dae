"""/v1/: the Segment tracking spec, so that Segment's libraries and Segment-compatible senders
(RudderStack, Jitsu, ...) can send to segflow as they send to Segment.

identify merges `traits` into the user's attributes; group merges them under
`groups.<groupId>`; track, page, screen and alias record events (`alias` with `previousId`);
batch does all of them in one transaction. See docs/api.md, "Segment-compatible endpoints".
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from segflow import users as user_service

from . import openapi, validation
from .auth import BasicApiKeyAuthentication
from .errors import InvalidInput
from .parsers import strict_json

# Segment's limits: 32 KB per message (what its libraries drop beyond) and 500 KB per batch.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

TYPES = ("identify", "track", "page", "screen", "group", "alias")


class UnsupportedEncoding(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE


class SegmentParser(BaseParser):
    """JSON, gzipped or not (`Content-Encoding: gzip`), within Segment's size limits (of the body
    once decompressed): 32 KB for one message, 500 KB for a batch. Strict as the rest of the API
    (no NaN, valid Unicode)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        context = parser_context or {}
        limit, what = getattr(context.get("view"), "body_limit", (MAX_MESSAGE_BYTES, "message"))
        request = context.get("request")
        coding = (request.META.get("HTTP_CONTENT_ENCODING", "") if request else "").strip().lower()
        if coding not in ("", "identity", "gzip"):
            raise UnsupportedEncoding(
                f"Content-Encoding: {coding!r} is not accepted; send gzip or no encoding"
            )
        body = stream.read(limit + 1) if stream is not None else b""
        if coding == "gzip":
            body = _gunzip(body, limit)
        if len(body) > limit:
            raise ParseError("body: " + _too_large(limit, what))
        return strict_json(body, context.get("encoding", "utf-8"))


class SegmentTextParser(SegmentParser):
    """Some senders (browsers sending beacons) label their JSON text/plain."""

    media_type = "text/plain"


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise ParseError("body: sent as Content-Encoding gzip, but is not valid gzip") from None
    if len(data) <= limit and not inflater.eof:
        raise ParseError("body: sent as Content-Encoding gzip, but the gzip data is cut short")
    return data


def _too_large(limit: int, what: str) -> str:
    return f"larger than the limit of {limit} bytes ({limit // 1024} KB per {what})"


@dataclass
class Writes:
    """What a request's messages ask for: events to record, attribute patches to merge."""

    events: list[user_service.NewEvent] = field(default_factory=list)
    patches: list[tuple[str, dict]] = field(default_factory=list)


def read_message(message: Any, kind: str, writes: Writes, prefix: str = "", context=None) -> None:
    """Check one message of type `kind` and add what it asks for to `writes`; `prefix` names
    where it sits in the body ("batch[3]." in a batch, nothing for a single call), and `context`
    is the batch's, under the message's own."""
    if not isinstance(message, dict):
        where = prefix[:-1] if prefix else "body"
        raise InvalidInput(where, f"must be a JSON object, got {validation.json_type(message)}")
    # Checked on every message, kept with events: when it happened, its id, where it came from.
    timestamp = validation.event_time(message.get("timestamp"), prefix + "timestamp")
    message_id = validation.message_id(message.get("messageId"), prefix + "messageId")
    context = {**(context or {}), **_object(message, "context", prefix)}

    if kind == "alias":
        user_id = _id(message, "userId", prefix)
        name, attributes = "alias", {"previousId": _id(message, "previousId", prefix)}
    else:
        user_id = _user_id(message, prefix)
    if kind == "identify":
        writes.patches.append((user_id, _object(message, "traits", prefix)))
        return
    if kind == "group":
        group_id = _id(message, "groupId", prefix)
        writes.patches.append((user_id, {"groups": {group_id: _object(message, "traits", prefix)}}))
        return
    if kind == "track":
        if message.get("event") is None:
            raise InvalidInput(prefix + "event", "this field is required")
        name = validation.identifier(message["event"], prefix + "event")
        attributes = _object(message, "properties", prefix)
    elif kind in ("page", "screen"):
        name, attributes = kind, dict(_object(message, "properties", prefix))
        for key in ("name", "category"):
            value = message.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(
                    prefix + key, f"must be a string, got {validation.json_type(value)}"
                )
            if value is not None:
                attributes[key] = value
    writes.events.append(
        user_service.NewEvent(
            user_id=user_id,
            name=name,
            attributes=attributes,
            message_id=message_id,
            timestamp=timestamp,
            context=context,
        )
    )


def _user_id(message: dict, prefix: str) -> str:
    """`userId`, or for a message from someone not yet known, `anonymousId`."""
    for key in ("userId", "anonymousId"):
        if message.get(key) not in (None, ""):
            return _id(message, key, prefix)
    raise InvalidInput(prefix + "userId", "this field is required (or anonymousId)")


def _id(message: dict, key: str, prefix: str) -> str:
    value = message.get(key)
    if value is None:
        raise InvalidInput(prefix + key, "this field is required")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # Segment's libraries send numeric ids as strings; others may not
    return validation.path_safe_user_id(value, prefix + key)


def _object(message: dict, key: str, prefix: str) -> dict:
    value = message.get(key)
    return {} if value is None else validation.attributes(value, prefix + key)


class SegmentView(APIView):
    """One Segment call, answered as Segment answers: {"success": true}."""

    authentication_classes = [BasicApiKeyAuthentication]
    parser_classes = [SegmentParser, SegmentTextParser]
    kind = ""
    body_limit = (MAX_MESSAGE_BYTES, "message")

    def post(self, request):
        writes = Writes()
        self.read(request.data, writes)
        if len(writes.events) == 1 and not writes.patches:
            # One event (track, page, screen, alias): the single event's few statements.
            user_service.store_event(writes.events[0])
        else:
            user_service.store_events(writes.events, writes.patches)
        return Response({"success": True})

    def read(self, data: Any, writes: Writes) -> None:
        read_message(data, self.kind, writes)


@openapi.segment_view("identify")
class IdentifyView(SegmentView):
    kind = "identify"


@openapi.segment_view("track")
class TrackView(SegmentView):
    kind = "track"


@openapi.segment_view("page")
class PageView(SegmentView):
    kind = "page"


@openapi.segment_view("screen")
class ScreenView(SegmentView):
    kind = "screen"


@openapi.segment_view("group")
class GroupView(SegmentView):
    kind = "group"


@openapi.segment_view("alias")
class AliasView(SegmentView):
    kind = "alias"


@openapi.segment_view("batch")
class BatchView(SegmentView):
    """Many messages of any types, all stored in one transaction or none."""

    body_limit = (MAX_BATCH_BYTES, "batch")

    def read(self, data: Any, writes: Writes) -> None:
        if not isinstance(data, dict):
            raise InvalidInput("body", f"must be a JSON object, got {validation.json_type(data)}")
        items = data.get("batch")
        if not isinstance(items, list):
            problem = "must be a JSON array of messages"
            raise InvalidInput("batch", "this field is required" if items is None else problem)
        context = _object(data, "context", "")
        for n, message in enumerate(items):
            kind = ""
            if isinstance(message, dict):
                if _written_size(message) > MAX_MESSAGE_BYTES:
                    raise InvalidInput(f"batch[{n}]", _too_large(MAX_MESSAGE_BYTES, "message"))
                kind = message.get("type")
                if kind not in TYPES:
                    raise InvalidInput(
                        f"batch[{n}].type",
                        "this field is required"
                        if kind is None
                        else f"must be one of {', '.join(TYPES)}; got {json.dumps(kind)[:40]}",
                    )
            read_message(message, kind, writes, f"batch[{n}].", context)


def _written_size(message: dict) -> int:
    """The bytes of `message` written as compact JSON, as Segment's libraries measure it."""
    try:
        size = len(orjson.dumps(message))
    except (TypeError, orjson.JSONEncodeError):  # (an integer beyond 64 bits)
        size = MAX_MESSAGE_BYTES
    # orjson writes some floats a few bytes shorter or longer than Python (1e-5, 1e-05): near
    # the limit, the exact size.
    if size < MAX_MESSAGE_BYTES // 2:
        return size
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


@csrf_exempt
def no_such_endpoint(request, *args, **kwargs):
    return JsonResponse(
        {
            "error": f"path: no endpoint at {request.path}; the Segment endpoints are "
            "/v1/identify, /v1/track, /v1/page, /v1/screen, /v1/group, /v1/alias and /v1/batch"
        },
        status=404,
    )
