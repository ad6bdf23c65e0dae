from .env import env

# Used when the config names no email_provider: the console in the embedded default.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="segflow@localhost")
# Set to force Django's EMAIL_BACKEND whatever provider the config names (local runs, tests).
SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND = env.bool("SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND", default=False)
