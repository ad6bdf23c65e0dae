"""Email: which backend delivers, the providers' secrets, retries, webhooks and unsubscribe links.

The config file picks the provider (`email_provider`); everything secret or specific to a
deployment comes from the environment, never from the config in Git. See docs/email.md.
"""

from .env import env

# Used when the config names no email_provider, or names "django": the console in the embedded
# default, so every email is printed by the server, a few lines each (and kept in the outbox).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="delivery.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="segflow@localhost")
# Where django.core.mail.backends.filebased.EmailBackend writes, when that is the EMAIL_BACKEND.
if env.str("EMAIL_FILE_PATH", default=""):
    EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH")
# Set to force Django's EMAIL_BACKEND whatever provider the config names (local runs, tests).
SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND = env.bool("SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND", default=False)

# The address segflow is reached at from the internet: unsubscribe links are built on it.
SEGFLOW_PUBLIC_URL = env.str("SEGFLOW_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

# The shared secret that the providers' webhooks must send (HTTP basic auth, "user:password";
# a value without a colon is the password of the user "segflow"). Unset, webhooks answer 403.
SEGFLOW_WEBHOOK_SECRET = env.str("SEGFLOW_WEBHOOK_SECRET", default="")
if SEGFLOW_WEBHOOK_SECRET and ":" not in SEGFLOW_WEBHOOK_SECRET:
    SEGFLOW_WEBHOOK_SECRET = f"segflow:{SEGFLOW_WEBHOOK_SECRET}"

# The SNS topics whose messages the Amazon SES webhook takes (their ARNs, comma separated); empty
# takes any topic, as long as Amazon SNS signed the message (see delivery/sns.py).
SEGFLOW_SES_ALLOWED_TOPIC_ARNS = env.list("SEGFLOW_SES_ALLOWED_TOPIC_ARNS", default=[])

# Delivery: how long one call to the provider may take, and how failures are retried. A failure
# the provider calls temporary (a 5xx, a rate limit, no connection) is tried again after
# RETRY_BASE * 2^(attempt - 1) seconds, at most RETRY_MAX apart, up to MAX_ATTEMPTS calls in all.
SEGFLOW_EMAIL_TIMEOUT_SECONDS = env.float("SEGFLOW_EMAIL_TIMEOUT_SECONDS", default=30.0)
SEGFLOW_EMAIL_MAX_ATTEMPTS = env.int("SEGFLOW_EMAIL_MAX_ATTEMPTS", default=8)
SEGFLOW_EMAIL_RETRY_BASE_SECONDS = env.float("SEGFLOW_EMAIL_RETRY_BASE_SECONDS", default=60.0)
SEGFLOW_EMAIL_RETRY_MAX_SECONDS = env.float("SEGFLOW_EMAIL_RETRY_MAX_SECONDS", default=3600.0)
# A row still `sending` this long after its claim belongs to a process that died mid-send: the
# sweep marks it `unknown` (never sends it again). Keep it well above the timeout.
SEGFLOW_EMAIL_SENDING_STALE_SECONDS = env.int("SEGFLOW_EMAIL_SENDING_STALE_SECONDS", default=600)
# Emails claimed (queued -> sending) in one commit, sent, then recorded in one more commit. More
# costs fewer commits per email; a sending process that dies leaves up to this many `unknown`.
SEGFLOW_EMAIL_SEND_BATCH = env.int("SEGFLOW_EMAIL_SEND_BATCH", default=25)

ANYMAIL = {
    # Postmark: the server token, never in the config file.
    "POSTMARK_SERVER_TOKEN": env.str("POSTMARK_SERVER_TOKEN", default=""),
    "POSTMARK_API_URL": env.str("POSTMARK_API_URL", default="https://api.postmarkapp.com/"),
    # Amazon SES: boto3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or a role) and
    # AWS_REGION / AWS_DEFAULT_REGION itself; the config's "region" wins over the environment.
    # boto3 does not retry by itself: a retry after a read timeout could send twice, and
    # segflow's own retries (stored on the outbox row) handle throttling and outages.
    "AMAZON_SES_CLIENT_PARAMS": {
        "config": {
            "connect_timeout": SEGFLOW_EMAIL_TIMEOUT_SECONDS,
            "read_timeout": SEGFLOW_EMAIL_TIMEOUT_SECONDS,
            "retries": {"mode": "standard", "max_attempts": 1},
        }
    },
    "REQUESTS_TIMEOUT": SEGFLOW_EMAIL_TIMEOUT_SECONDS,
    "WEBHOOK_SECRET": SEGFLOW_WEBHOOK_SECRET,
}
