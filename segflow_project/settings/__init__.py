"""Settings, one module per concern. Everything a deployment changes comes from the environment."""

from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .database import *  # noqa: F403
from .email import *  # noqa: F403
from .openapi import *  # noqa: F403
from .push import *  # noqa: F403
