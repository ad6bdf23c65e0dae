"""Pushing configs: where the pushed versions are cached, how many are kept, who may push."""

from .base import DATA_UPLOAD_MAX_MEMORY_SIZE as _BASE_UPLOAD_LIMIT
from .env import BASE_DIR, env

# Remote pushes (POST /api/push with a key of the scope `push`) run the team's Python on every
# worker: a push key is as powerful as a shell on them. Off unless a deployment turns them on.
SEGFLOW_ALLOW_REMOTE_PUSH = env.bool("SEGFLOW_ALLOW_REMOTE_PUSH", default=False)
# The largest config bundle (the config's files together), in bytes.
SEGFLOW_PUSH_MAX_BYTES = env.int("SEGFLOW_PUSH_MAX_BYTES", default=5 * 1024 * 1024)
# How many pushed versions are kept in the database (the live one always is), for rollbacks.
SEGFLOW_CONFIG_VERSIONS_KEPT = env.int("SEGFLOW_CONFIG_VERSIONS_KEPT", default=20)
# Where each process writes the files of the version it runs, one folder per version.
SEGFLOW_CONFIG_CACHE_DIR = env.str(
    "SEGFLOW_CONFIG_CACHE_DIR", default=str(BASE_DIR / "var" / "config-cache")
)
# A push's body carries the bundle as JSON: room for it, escaped, beside the API's own limit.
SEGFLOW_PUSH_MAX_BODY_BYTES = 2 * SEGFLOW_PUSH_MAX_BYTES + 64 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = max(_BASE_UPLOAD_LIMIT, SEGFLOW_PUSH_MAX_BODY_BYTES + 1024)
