from pathlib import Path

from .env import BASE_DIR, env, refuse

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        refuse(
            "SECRET_KEY is not set. Set it in the environment (any long random string), "
            "or set DEBUG=1 for a local development run."
        )
    SECRET_KEY = "segflow-insecure-development-key-never-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    refuse(
        "ALLOWED_HOSTS is not set. Set it to the host names segflow is served under, "
        "comma separated (for example ALLOWED_HOSTS=segflow.example.com)."
    )
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "segflow.admin_apps.SegflowAdminConfig",  # Django's admin, with segflow's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # The API's OpenAPI schema, and Swagger UI's files for its docs page (docs/api.md).
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "anymail",
    "segflow",
    "segments",
    "campaigns",
    "transactions",
    "templates",
    "delivery",
]

MIDDLEWARE = [
    # First, so that under /api/ whatever fails below it is answered in JSON.
    "segflow.api.middleware.ApiErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files from any WSGI server, granian included.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The admin's: sessions, CSRF, the staff user, messages. They skip /api/ and /v1/, whose
    # calls carry an API key and need none of them.
    "segflow.api.middleware.AdminOnlySessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "segflow.api.middleware.AdminOnlyCsrfViewMiddleware",
    "segflow.api.middleware.AdminOnlyAuthenticationMiddleware",
    "segflow.api.middleware.AdminOnlyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "segflow_project.urls"
WSGI_APPLICATION = "segflow_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["segflow_project.formats"]  # dates as 2026-03-02 09:00

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "var" / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (a laptop, the tests) whitenoise serves the apps' static folders directly.
WHITENOISE_USE_FINDERS = True

# Safe by default when DEBUG is off; each can be relaxed from the environment (a local trial
# over plain http) but `manage.py check --deploy` is clean as shipped.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^api/ready$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["segflow.api.auth.ApiKeyAuthentication"],
    # A key, of the scope the view needs (`ingest` unless it says otherwise).
    "DEFAULT_PERMISSION_CLASSES": ["segflow.api.permissions.HasKeyScope"],
    "DEFAULT_PARSER_CLASSES": ["segflow.api.parsers.StrictJSONParser"],
    # DRF's JSONRenderer's bytes, written by orjson.
    "DEFAULT_RENDERER_CLASSES": ["segflow.api.renderers.FastJSONRenderer"],
    "EXCEPTION_HANDLER": "segflow.api.errors.exception_handler",
    # Described by segflow/api/openapi.py; settings in settings/openapi.py.
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

# segflow's own settings.
# The config file: a dotted module or a path to a .py file. Left unset, it is the example, and
# `segflow_up` (python3 dev.py) runs the config last pushed instead (docs/commands.md#segflow_up).
_configured_config = env.str("SEGFLOW_CONFIG", default="")
SEGFLOW_CONFIG = _configured_config or str(BASE_DIR / "examples" / "segflow_config.py")
SEGFLOW_CONFIG_IS_SET = bool(_configured_config)
# How long each process may go on using an API key it has read without reading it again: a
# revoked key is refused by every process at most this many seconds after (0: read every request).
SEGFLOW_API_KEY_CACHE_SECONDS = env.float("SEGFLOW_API_KEY_CACHE_SECONDS", default=1.0)
# Largest request body the API accepts, in bytes.
SEGFLOW_MAX_BODY_BYTES = env.int("SEGFLOW_MAX_BODY_BYTES", default=256 * 1024)
# When the database or the broker is down, the API answers 503 with this Retry-After.
SEGFLOW_RETRY_AFTER_SECONDS = env.int("SEGFLOW_RETRY_AFTER_SECONDS", default=5)
# How long /api/ready waits for the database (and, in production mode, the broker) to answer.
SEGFLOW_READY_TIMEOUT_SECONDS = env.float("SEGFLOW_READY_TIMEOUT_SECONDS", default=2.0)
# Most events one POST /api/events may carry.
SEGFLOW_MAX_EVENTS_PER_REQUEST = env.int("SEGFLOW_MAX_EVENTS_PER_REQUEST", default=500)
# An event's `timestamp` may be at most this far ahead of segflow's clock (clock skew); beyond it
# the event is refused.
SEGFLOW_MAX_EVENT_FUTURE_SECONDS = env.int("SEGFLOW_MAX_EVENT_FUTURE_SECONDS", default=24 * 3600)
# A transactional email is sent only for an event that happened at most this long before it
# arrived: an import of old events (with their `timestamp`) sends no confirmations.
SEGFLOW_TRANSACTION_MAX_AGE_SECONDS = env.int("SEGFLOW_TRANSACTION_MAX_AGE_SECONDS", default=3600)
# Django refuses larger bodies before segflow sees them; keep its limit out of segflow's way.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(SEGFLOW_MAX_BODY_BYTES + 1024, 2_621_440)
# How often the embedded ticker runs due work, in seconds.
SEGFLOW_TICK_SECONDS = env.float("SEGFLOW_TICK_SECONDS", default=1.0)
# How often a segment whose answer changes with time alone is re-evaluated, unless it sets its own.
SEGFLOW_TIME_SEGMENT_REFRESH_SECONDS = env.int("SEGFLOW_TIME_SEGMENT_REFRESH_SECONDS", default=60)
# Work the after-commit hook should have done is picked up by the schedule after this delay.
SEGFLOW_SWEEP_AFTER_SECONDS = env.int("SEGFLOW_SWEEP_AFTER_SECONDS", default=30)
# A due cursor handed to a worker is handed out again after this long if its step has not run.
SEGFLOW_CLAIM_LEASE_SECONDS = env.int("SEGFLOW_CLAIM_LEASE_SECONDS", default=300)
# A campaign email for a user with no email address waits this long for one, from when its step
# came due, trying again every RETRY seconds (and when the user changes), before it is skipped.
SEGFLOW_WAIT_FOR_ADDRESS_SECONDS = env.int("SEGFLOW_WAIT_FOR_ADDRESS_SECONDS", default=3600)
SEGFLOW_WAIT_FOR_ADDRESS_RETRY_SECONDS = env.int(
    "SEGFLOW_WAIT_FOR_ADDRESS_RETRY_SECONDS", default=60
)
# How many due cursors one task advances together, and how many emails one task delivers. A
# batch holds its users while it advances: on the benchmark, 100 against 50 sent a campaign 16%
# faster (bench/README.md), for locks held about twice as long.
SEGFLOW_BATCH_SIZE = env.int("SEGFLOW_BATCH_SIZE", default=100)
# Events and users waiting for evaluation are drained by workers this many at a time, for at most
# this long per task before the task hands the rest to the next one. A batch holds its users while
# it runs, and batched writes for them wait: on the benchmark, 250 against 500 took batched events
# faster and processed nearly as many (docs/commands.md).
SEGFLOW_DRAIN_BATCH_SIZE = env.int("SEGFLOW_DRAIN_BATCH_SIZE", default=250)
SEGFLOW_DRAIN_SECONDS = env.float("SEGFLOW_DRAIN_SECONDS", default=2.0)
# A drain of events also takes the later events of the users it claimed, from among this many
# next in the queue: with a backlog, each user is evaluated once for several events (0: off).
SEGFLOW_DRAIN_LOOKAHEAD = env.int("SEGFLOW_DRAIN_LOOKAHEAD", default=4000)
# A process turns the writes it takes into at most one drain task per queue every this long:
# longer gives drains more events each (less work per event), shorter answers sooner.
SEGFLOW_DOORBELL_PAUSE_SECONDS = env.float("SEGFLOW_DOORBELL_PAUSE_SECONDS", default=0.02)
# Rings are published by a thread of their own, off the request's path (tests publish in line).
SEGFLOW_DOORBELL_THREAD = env.bool("SEGFLOW_DOORBELL_THREAD", default=True)
# A drain task waiting on the broker stops others being queued for this long at most.
SEGFLOW_DOORBELL_LEASE_SECONDS = env.float("SEGFLOW_DOORBELL_LEASE_SECONDS", default=2.0)
# Inside a worker, the follow-on work of a drain (advancing the cursors it claimed) and of an
# advance (delivering the emails it queued) runs in the same worker right after the commit, instead
# of going through the broker to another task: for small batches the hop cost more than the work.
SEGFLOW_WORKER_FOLLOW_ON = env.bool("SEGFLOW_WORKER_FOLLOW_ON", default=True)
# A whole segment is re-evaluated this many users at a time (one task each for a time-based one).
SEGFLOW_SEGMENT_CHUNK_USERS = env.int("SEGFLOW_SEGMENT_CHUNK_USERS", default=100_000)

# Where `segflow_up` keeps the development admin password and API key it printed.
SEGFLOW_DEV_CREDENTIALS_FILE = env.str(
    "SEGFLOW_DEV_CREDENTIALS_FILE", default=str(BASE_DIR / "var" / "dev-credentials.json")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
