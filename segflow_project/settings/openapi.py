"""The API's OpenAPI schema (drf-spectacular), served at /api/schema/ and shown at /api/docs/.

Swagger UI's files come from drf-spectacular-sidecar, served by whitenoise like the admin's: the
docs page loads nothing from a CDN.
"""

SPECTACULAR_SETTINGS = {
    "TITLE": "segflow API",
    "DESCRIPTION": (
        "Users and events from your app's backend (`/api/`), configs pushed from CI "
        "(`/api/push`), and Segment's tracking API (`/v1/`). Every answer is JSON; an error is "
        '`{"error": "<field>: <problem>"}`, with `fields` when the input is at fault. The guide '
        "is docs/api.md in segflow's repository."
    ),
    "VERSION": "1",
    # The schema and the docs page are open: the schema holds no secret, and a key is still
    # needed for every call the docs page makes.
    "SERVE_PUBLIC": True,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "persistAuthorization": False},
    # PATCH takes the same body as PUT (attributes is required), not a partial one.
    "COMPONENT_SPLIT_PATCH": False,
    "SORT_OPERATIONS": False,
    # The views' docstrings are for segflow's developers; openapi.py says what callers read.
    "DISABLE_DOCSTRING_DESCRIPTIONS": True,
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "campaigns.models.Cursor.Status",
        "CheckEnum": ["ok", "down"],
        "SegmentMessageTypeEnum": ["identify", "track", "page", "screen", "group", "alias"],
    },
    "TAGS": [
        {"name": "users", "description": "Users and their attributes"},
        {"name": "events", "description": "What users do"},
        {"name": "api", "description": "The API itself: its endpoints, liveness, readiness"},
        {"name": "configs", "description": "Configs pushed from CI (a key of the scope `push`)"},
        {
            "name": "segment",
            "description": "Segment's HTTP tracking API, for Segment's libraries and compatible "
            "senders (HTTP Basic, the API key as the user name)",
        },
    ],
}
