"""The API's OpenAPI description, for drf-spectacular: what each endpoint takes and answers, its
errors, and how callers authenticate. Served at /api/schema/, shown at /api/docs/.

The views check what they receive by hand (`validation.py`, `segment.py`, `push.py`); the
serializers here only describe it, and are never run. `Closed` ones are JSON objects with these
keys and no others. Each view class wears the decorator named after it (`@openapi.user_view`).
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers

from campaigns.models import Cursor

from .validation import MAX_ATTRIBUTE_DEPTH, MAX_ID_LENGTH

# Ids and names: not empty, not only whitespace, no control characters (validation.identifier).
_PRINTABLE = r"[^\x00-\x1f\x7f]"
NAME_PATTERN = rf"^{_PRINTABLE}*[^\s\x00-\x1f\x7f]{_PRINTABLE}*$"
# A user id, which is a path segment: no "/" either (validation.path_safe_user_id).
USER_ID_PATTERN = r"^[^/\x00-\x1f\x7f]*[^/\s\x00-\x1f\x7f][^/\x00-\x1f\x7f]*$"
NAME_RULE = f"1-{MAX_ID_LENGTH} characters, not only spaces, no control characters"
ATTRIBUTES_RULE = f"A JSON object, nested at most {MAX_ATTRIBUTE_DEPTH} levels deep."


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "segflow.api.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "segflow API key (sf_...)",
            "description": "`Authorization: Bearer <api key>`, with a key from `manage.py "
            "segflow_create_api_key`. Keys have a scope: `ingest` (the default) for the users "
            "and events API, `push` for POST /api/push; each is refused (403) where the other "
            "belongs.",
        }


class SegmentWriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "segflow.api.auth.BasicApiKeyAuthentication"
    name = "segmentWriteKey"

    def get_security_requirement(self, auto_schema):
        # Either one: Basic as Segment's libraries send their write key, or the bearer key.
        return [{self.name: []}, {ApiKeyScheme.name: []}]

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "HTTP Basic with an API key of the scope `ingest` as the user name "
            "and an empty password, as Segment's libraries send their write key (a password, if "
            "sent, is ignored). `Authorization: Bearer <api key>` works too.",
        }


# A JSON object with exactly these keys: the API refuses others in a body (400), and sends no
# others in an answer.
class Closed(serializers.Serializer):
    pass


class ClosedObject(OpenApiSerializerExtension):
    target_class = Closed
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class Attributes(serializers.DictField):
    """Free-form JSON attributes."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", ATTRIBUTES_RULE)
        super().__init__(**kwargs)


def _name(help_text: str, **kwargs) -> serializers.RegexField:
    return serializers.RegexField(
        NAME_PATTERN, max_length=MAX_ID_LENGTH, help_text=f"{help_text} ({NAME_RULE}).", **kwargs
    )


# Errors.


class Error(Closed):
    error = serializers.CharField(
        help_text="What went wrong, starting with what to look at: `Authorization:`, `id:`, "
        "`path:`, `method:`, `Content-Type:`, `body:`, a field, `database:`, `broker:`."
    )


class InvalidInputError(Closed):
    error = serializers.CharField(
        help_text="`<field>: <problem>`; the field is a key of the body (`events[1].name` in a "
        "list), `id` for the user id in the path, a query parameter, or `body` for the body as "
        "a whole."
    )
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="The problems by field. Absent when the body as a whole cannot be read "
        "(malformed JSON, a number too large, text that is not Unicode).",
    )


class NotFoundError(Closed):
    error = serializers.CharField(
        help_text="`id: no user with id '...'`, or `path: no API endpoint at ...` for a path "
        "that matches no endpoint (a user id with a `/` in it, even encoded as `%2F`, makes one)."
    )
    endpoints = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="The API's endpoints, with a path that matches none.",
    )


class ServerError(Closed):
    error = serializers.CharField(
        help_text="`server: an unexpected error, logged under the id ...; this is a bug in "
        "segflow`. The error's own text is only in the server's log."
    )
    error_id = serializers.CharField(help_text="The id of the log line with the traceback.")


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    required=True,
    response=[503],
    description="Seconds to wait before sending the request again (SEGFLOW_RETRY_AFTER_SECONDS).",
)
WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    str,
    OpenApiParameter.HEADER,
    required=True,
    response=[401],
    description='`Bearer realm="segflow"` (`Basic realm="segflow"` under /v1/).',
)

ERRORS = {
    400: OpenApiResponse(
        InvalidInputError,
        "The input is not valid (the body, the user id or a query parameter); nothing was changed.",
    ),
    401: OpenApiResponse(
        Error, "No API key, or one that is unknown or revoked (`Authorization: ...`)."
    ),
    403: OpenApiResponse(Error, "The API key's scope is not the one this endpoint needs."),
    404: OpenApiResponse(NotFoundError, "No such user, or no endpoint at this path."),
    413: OpenApiResponse(
        Error, "The body is over the size limit (SEGFLOW_MAX_BODY_BYTES, 256 KiB by default)."
    ),
    415: OpenApiResponse(Error, "The body is not sent as `Content-Type: application/json`."),
    500: OpenApiResponse(ServerError, "A bug in segflow, logged with an id."),
    503: OpenApiResponse(
        Error,
        "The database (or the broker) is not available: wait `Retry-After` seconds and send "
        "the request again. A write answered 503 was not stored.",
    ),
}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    answers: dict,
    errors: tuple[int, ...],
    *,
    request=None,
    parameters: tuple = (),
    description: str | None = None,
    error_overrides: dict | None = None,
    example: dict | None = None,
):
    """extend_schema for one operation: its answers, then the errors it may give (each with
    the shared description unless overridden), with their headers; `example`, a request body
    (Swagger UI starts from it)."""
    responses = dict(answers)
    for code in sorted(errors):
        responses[code] = (error_overrides or {}).get(code, ERRORS[code])
    headers = [h for h, code in ((WWW_AUTHENTICATE, 401), (RETRY_AFTER, 503)) if code in errors]
    return extend_schema(
        operation_id=operation_id,
        tags=[tag],
        summary=summary,
        description=description,
        request=request,
        responses=responses,
        parameters=[*parameters, *headers],
        examples=[OpenApiExample("Example", example, request_only=True)] if example else None,
    )


# Errors every endpoint with a key may give; with a body, those about the body too.
KEYED = (401, 403, 500, 503)
WITH_BODY = (400, 401, 403, 413, 415, 500, 503)

# PUT and POST .../events make an unknown user: a 404 is only for a path that is no endpoint.
NO_ENDPOINT = {
    404: OpenApiResponse(
        NotFoundError,
        "No endpoint at this path: a user id with a `/` in it (even encoded as `%2F`) makes one.",
    )
}

USER_ID = OpenApiParameter(
    "user_id",
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": USER_ID_PATTERN},
    OpenApiParameter.PATH,
    description=f"Your app's id for the user: {NAME_RULE}, no `/`; compared exactly, case and "
    "spaces included. Encode it in the URL.",
)


# Users.


class UserBody(Closed):
    attributes = Attributes(
        help_text=f"{ATTRIBUTES_RULE} `email`, if given, is one bare address such as "
        'jane@example.com, or null or "" for none; other keys are free-form.'
    )


class CampaignPlace(Closed):
    campaign = serializers.CharField(help_text="The campaign's name.")
    status = serializers.ChoiceField(choices=Cursor.Status.choices)
    steps_done = serializers.IntegerField(min_value=0, help_text="Steps performed, waits included.")
    next_step_at = serializers.DateTimeField(
        allow_null=True, help_text="When an active place continues."
    )
    entered_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.CharField(allow_blank=True)


class User(Closed):
    id = serializers.CharField()
    attributes = Attributes()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    segments = serializers.ListField(
        child=serializers.CharField(), help_text="The segments the user is in, sorted by name."
    )
    campaigns = CampaignPlace(
        many=True, help_text="The user's places in campaigns, oldest first, ended ones included."
    )


user_view = extend_schema_view(
    get=_operation(
        "get_user",
        "users",
        "Read a user",
        {200: OpenApiResponse(User, "The user, with their segments and campaigns.")},
        (400, 404, *KEYED),
        parameters=(USER_ID,),
    ),
    put=_operation(
        "put_user",
        "users",
        "Create or replace a user",
        {
            200: OpenApiResponse(User, "Replaced: the user's attributes are the ones sent."),
            201: OpenApiResponse(User, "Created."),
        },
        (*WITH_BODY, 404),
        request=UserBody,
        parameters=(USER_ID,),
        description="Creates the user, or replaces all of an existing user's attributes.",
        error_overrides=NO_ENDPOINT,
        example={
            "attributes": {
                "email": "jane@example.com",
                "name": "Jane",
                "lastLoginAt": "2026-11-27T09:00:00+00:00",
            }
        },
    ),
    patch=_operation(
        "patch_user",
        "users",
        "Update some of a user's attributes",
        {200: OpenApiResponse(User, "Updated.")},
        (*WITH_BODY, 404),
        request=UserBody,
        parameters=(USER_ID,),
        description="Merges the attributes into the user's as a JSON merge patch (RFC 7396): "
        "given keys replace the user's, nested objects are merged, `null` removes a key. The "
        "user must exist (404 otherwise: create them with PUT).",
        example={"attributes": {"plan": "pro", "lastLoginAt": None}},
    ),
    delete=_operation(
        "delete_user",
        "users",
        "Delete a user",
        {204: OpenApiResponse(None, "Deleted, with everything segflow held about the user.")},
        (400, 404, *KEYED),
        parameters=(USER_ID,),
    ),
)


# Events.


class EventBody(Closed):
    name = _name("The event's name")
    attributes = Attributes(required=False)
    message_id = _name(
        "Your id for the event: an event whose message_id is stored is not stored or acted on "
        "again",
        required=False,
        allow_null=True,
    )
    timestamp = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When it happened, ISO 8601 with a UTC offset, from 1970 to "
        "SEGFLOW_MAX_EVENT_FUTURE_SECONDS ahead; default: when it arrives.",
    )


class BatchEventBody(EventBody):
    user_id = serializers.RegexField(
        USER_ID_PATTERN,
        max_length=MAX_ID_LENGTH,
        help_text=f"The user's id ({NAME_RULE}, no `/`); an unknown user is created.",
    )


class EventsBody(Closed):
    events = serializers.ListField(
        child=BatchEventBody(),
        min_length=1,
        max_length=settings.SEGFLOW_MAX_EVENTS_PER_REQUEST,
        help_text="Stored in one transaction, all of them or none "
        "(at most SEGFLOW_MAX_EVENTS_PER_REQUEST).",
    )


class Event(Closed):
    id = serializers.IntegerField()
    user_id = serializers.CharField()
    name = serializers.CharField()
    attributes = Attributes()
    timestamp = serializers.DateTimeField(help_text="When it happened.")
    created_at = serializers.DateTimeField(help_text="When segflow received it.")
    message_id = serializers.CharField(allow_null=True)
    context = serializers.DictField(
        help_text="What a Segment-compatible sender said about where the event came from "
        "(`{}` from /api/)."
    )


class RecordedEvent(Event):
    duplicate = serializers.BooleanField(
        help_text="Its message_id was stored before: this is the event stored then, and "
        "nothing was stored or done again."
    )


class RecordedEvents(Closed):
    events = RecordedEvent(many=True, help_text="In the order sent.")


class EventPage(Closed):
    count = serializers.IntegerField(min_value=0, help_text="The user's events in all.")
    next = serializers.URLField(allow_null=True, help_text="The next page; null on the last.")
    previous = serializers.URLField(allow_null=True, help_text="null on the first page.")
    results = Event(many=True)


PAGE_PARAMETERS = (
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1},
        description="The page number, 1 or more, in ASCII digits (default 1); a page past the "
        "last is a 400.",
    ),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1},
        description="Events per page, 1 or more in ASCII digits (default 50); over 500 gives 500.",
    ),
)

user_events_view = extend_schema_view(
    get=_operation(
        "list_user_events",
        "events",
        "List a user's events",
        {200: OpenApiResponse(EventPage, "Newest first (by arrival), a page at a time.")},
        (400, 404, *KEYED),
        parameters=(USER_ID, *PAGE_PARAMETERS),
    ),
    post=_operation(
        "record_event",
        "events",
        "Record an event",
        {
            200: OpenApiResponse(
                RecordedEvent, "A duplicate: the event stored before with this message_id."
            ),
            201: OpenApiResponse(RecordedEvent, "Stored; an unknown user is created."),
        },
        (*WITH_BODY, 404),
        request=EventBody,
        parameters=(USER_ID,),
        error_overrides=NO_ENDPOINT,
        example={
            "name": "purchase",
            "attributes": {"orderId": "ord_125", "amount": 25},
            "message_id": "ord_125-purchase",
            "timestamp": "2026-12-01T13:25:00+01:00",
        },
    ),
)

events_view = extend_schema_view(
    post=_operation(
        "record_events",
        "events",
        "Record many events, for any users",
        {
            200: OpenApiResponse(RecordedEvents, "Every event was a duplicate."),
            201: OpenApiResponse(RecordedEvents, "At least one event was stored."),
        },
        WITH_BODY,
        request=EventsBody,
        description="Up to SEGFLOW_MAX_EVENTS_PER_REQUEST events in one request and one "
        "commit: all of them are stored, or, if one is refused, none (the error names it: "
        "`events[1].name: ...`). A message_id repeated in the batch or stored before is a "
        "duplicate: the event stored first, not stored again.",
        example={
            "events": [
                {"user_id": "user123", "name": "purchase", "attributes": {"orderId": "ord_124"}},
                {"user_id": "user456", "name": "login"},
            ]
        },
    ),
)


# The API itself.


class Endpoints(Closed):
    endpoints = serializers.DictField(
        child=serializers.CharField(), help_text="Each endpoint and what it does."
    )


class Health(Closed):
    status = serializers.ChoiceField(choices=["ok"])


class Checks(Closed):
    database = serializers.ChoiceField(choices=["ok", "down"])
    broker = serializers.ChoiceField(
        choices=["ok", "down"], required=False, help_text="With Celery (production mode) only."
    )


class Ready(Closed):
    status = serializers.ChoiceField(choices=["ready"])
    checks = Checks()


class NotReady(Closed):
    status = serializers.ChoiceField(choices=["not ready"])
    error = serializers.CharField(help_text="What does not answer: `database: does not answer`.")
    checks = Checks()


index_view = extend_schema_view(
    get=_operation(
        "list_endpoints",
        "api",
        "List the endpoints (and check a key)",
        {200: OpenApiResponse(Endpoints, "The key is good.")},
        KEYED,
    ),
)

health_view = extend_schema_view(
    get=_operation(
        "health",
        "api",
        "Liveness",
        {200: OpenApiResponse(Health, "The web process answers.")},
        (500,),
        description="No key needed. Touches neither the database nor the broker.",
    ),
)

ready_view = extend_schema_view(
    get=_operation(
        "ready",
        "api",
        "Readiness",
        {200: OpenApiResponse(Ready, "The database (and the broker, with Celery) answer.")},
        (500, 503),
        error_overrides={503: OpenApiResponse(NotReady, "What does not answer is named.")},
        description="No key needed. Asks the database for `SELECT 1` and, with Celery, the "
        "broker, each within SEGFLOW_READY_TIMEOUT_SECONDS.",
    ),
)

# Not endpoints: a path with an empty user id, answered with a 400 that says so.
not_an_endpoint = extend_schema(exclude=True)


# Configs pushed from CI.


class Bundle(Closed):
    entry = serializers.CharField(
        help_text="The config module's file name, a .py file at the top of `files`."
    )
    files = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        help_text="Each file's path, relative to the config's folder, and its text.",
    )
    location = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=1000,
        help_text="The config as the pusher named it.",
    )
    fingerprint = serializers.CharField(
        required=False, allow_null=True, help_text="Checked against the files when given."
    )
    git_commit = serializers.RegexField(r"^[0-9a-f]{4,64}$", required=False, allow_null=True)
    git_dirty = serializers.BooleanField(required=False, allow_null=True)


class PushBody(Closed):
    bundle = Bundle(help_text="What `segflow.client.collect_bundle` makes.")
    dry_run = serializers.BooleanField(required=False, default=False)


class RollbackBody(Closed):
    to = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="The version to apply again; null: the one live before the current one.",
    )
    dry_run = serializers.BooleanField(required=False, default=False)


class InFlight(Closed):
    on_change = serializers.ChoiceField(choices=["end", "restart", "keep_old"])
    # "continue" is a Python keyword: the field is named in the schema, not as an attribute.
    keep_old = serializers.IntegerField(min_value=0)
    restart = serializers.IntegerField(min_value=0)
    end = serializers.IntegerField(min_value=0)


InFlight._declared_fields["continue"] = serializers.IntegerField(min_value=0)


class Plan(Closed):
    plan = serializers.CharField(help_text="The plan, as a local push prints it.")
    outcome = serializers.CharField()
    changed = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    version = serializers.IntegerField(
        allow_null=True, help_text="The version live after the push, once it has changes."
    )
    rollback_to = serializers.IntegerField(
        allow_null=True, help_text="The version a rollback applied again."
    )
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the push found risky in the flows but did not refuse, each "
        "`file:line: ...` (a flow reading the clock or `random`, which replay runs again).",
    )
    in_flight = serializers.DictField(
        child=InFlight(),
        help_text="Per campaign whose flow changed: how many of the users in the middle of it "
        "continue on the new flow, restart from the top, stay on the old version, or end "
        "(docs/config.md, `on_change`).",
    )


PUSH_ERRORS = {
    400: OpenApiResponse(
        InvalidInputError,
        "The body, the bundle or the config is not valid (`The config is not valid: ...`, "
        "naming the file and line); nothing was pushed.",
    ),
    403: OpenApiResponse(
        Error,
        "A key of another scope than `push`, or remote pushes are off on this server "
        "(SEGFLOW_ALLOW_REMOTE_PUSH).",
    ),
    413: OpenApiResponse(
        Error, "The body is over twice SEGFLOW_PUSH_MAX_BYTES (5 MiB) plus 64 KiB."
    ),
}

push_view = extend_schema_view(
    post=_operation(
        "push",
        "configs",
        "Push a config",
        {200: OpenApiResponse(Plan, "Pushed (or, with dry_run, the plan alone).")},
        WITH_BODY,
        request=PushBody,
        error_overrides=PUSH_ERRORS,
        description="Pushes a config bundle as `manage.py segflow_push` does. Needs a key of "
        "the scope `push` and SEGFLOW_ALLOW_REMOTE_PUSH=1 on the server. Every request is "
        "audited, refused ones included.",
    ),
)

rollback_view = extend_schema_view(
    post=_operation(
        "rollback",
        "configs",
        "Roll back to an earlier config version",
        {200: OpenApiResponse(Plan, "Rolled back (or, with dry_run, the plan alone).")},
        WITH_BODY,
        request=RollbackBody,
        error_overrides=PUSH_ERRORS,
        example={"to": None, "dry_run": True},
    ),
)


# /v1/: Segment's tracking API.


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "pattern": USER_ID_PATTERN,
            },
            {"type": "integer"},
        ],
        "description": f"A user id: {NAME_RULE}, no `/`. A number is taken as its text.",
    }
)
class SegmentId(serializers.Field):
    pass


SEGMENT_TYPES = ["identify", "track", "page", "screen", "group", "alias"]


class SegmentMessage(serializers.Serializer):
    # Fields every message may have; others (`integrations`, `sentAt`, ...) are ignored.
    userId = SegmentId(required=False, allow_null=True)
    anonymousId = SegmentId(
        required=False,
        allow_null=True,
        help_text="Stored as the user id when there is no userId.",
    )
    messageId = _name(
        "The event's message_id: a message sent again is stored once",
        required=False,
        allow_null=True,
    )
    timestamp = serializers.DateTimeField(required=False, allow_null=True)
    context = serializers.DictField(
        required=False, allow_null=True, help_text="Kept on the event, as it is."
    )


class SegmentIdentify(SegmentMessage):
    traits = Attributes(
        required=False, allow_null=True, help_text="Merged into the user's attributes."
    )


class SegmentTrack(SegmentMessage):
    event = _name("The event's name")
    properties = Attributes(required=False, allow_null=True, help_text="The event's attributes.")


class SegmentPage(SegmentMessage):
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    category = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    properties = Attributes(required=False, allow_null=True)


class SegmentGroup(SegmentMessage):
    groupId = SegmentId()
    traits = Attributes(
        required=False, allow_null=True, help_text="Merged under `groups.<groupId>`."
    )


class SegmentAlias(SegmentMessage):
    userId = SegmentId(help_text="The user the alias is recorded on (anonymousId is not used).")
    previousId = SegmentId()


class SegmentBatchMessage(SegmentMessage):
    # One message of a batch: its `type` says which fields it needs.
    type = serializers.ChoiceField(choices=SEGMENT_TYPES)
    event = _name("track: the event's name", required=False)
    properties = Attributes(required=False, allow_null=True)
    traits = Attributes(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    category = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    groupId = SegmentId(required=False)
    previousId = SegmentId(required=False)


class SegmentBatch(serializers.Serializer):
    batch = SegmentBatchMessage(many=True)
    context = serializers.DictField(
        required=False, allow_null=True, help_text="Merged under each message's context."
    )


class SegmentSuccess(Closed):
    success = serializers.ChoiceField(choices=[True])


SEGMENT_ERRORS = {
    400: OpenApiResponse(
        InvalidInputError,
        "A message is not valid (in a batch, `batch[3].timestamp: ...`; nothing is stored), "
        "or the body is over Segment's limits: 32 KB for a message, 500 KB for a batch, once "
        "decompressed.",
    ),
    401: OpenApiResponse(Error, "No API key, or one that is unknown or revoked."),
    415: OpenApiResponse(
        Error,
        "Not JSON (`application/json` or `text/plain`), or a Content-Encoding other than gzip.",
    ),
}
TRACK_EXAMPLE = {
    "userId": "user789",
    "event": "purchase",
    "properties": {"orderId": "ord_200", "amount": 12},
    "messageId": "6f1c1b5e-0b7a-4c55-9a43-8a3c1d0e2f10",
    "timestamp": "2026-12-01T12:30:00.000Z",
}
IDENTIFY_EXAMPLE = {"userId": "user123", "traits": {"email": "jane@example.com", "name": "Jane"}}
SEGMENT_EXAMPLES = {
    "identify": IDENTIFY_EXAMPLE,
    "track": TRACK_EXAMPLE,
    "batch": {
        "batch": [{"type": "identify", **IDENTIFY_EXAMPLE}, {"type": "track", **TRACK_EXAMPLE}]
    },
}
SEGMENT_CALLS = {
    "identify": (SegmentIdentify, "Merge traits into a user's attributes"),
    "track": (SegmentTrack, "Record an event"),
    "page": (SegmentPage, "Record a page view (an event named page)"),
    "screen": (SegmentPage, "Record a screen view (an event named screen)"),
    "group": (SegmentGroup, "Merge a group's traits under the user's groups.<groupId>"),
    "alias": (SegmentAlias, "Record an alias event (the histories are not merged)"),
    "batch": (SegmentBatch, "Any of the others, in one transaction"),
}


def segment_view(kind: str):
    body, summary = SEGMENT_CALLS[kind]
    return extend_schema_view(
        post=_operation(
            f"segment_{kind}",
            "segment",
            summary,
            {200: OpenApiResponse(SegmentSuccess, "Stored (duplicates included).")},
            (400, 401, 403, 415, 500, 503),
            request={"application/json": body},
            error_overrides=SEGMENT_ERRORS,
            description="Segment's tracking spec, answered as Segment answers. A message with "
            "no userId is stored under its anonymousId. Fields not described here "
            "(`integrations`, `sentAt`, ...) are accepted and ignored. The body may be gzipped "
            "(`Content-Encoding: gzip`) and sent as `text/plain`, as some senders do.",
            example=SEGMENT_EXAMPLES.get(kind),
        )
    )
