from pathlib import Path

from .env import BASE_DIR, env

# sqlite:///path or mysql://user:password@host:port/name
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'segflow.sqlite3'}"),
}

_default = DATABASES["default"]
if _default["ENGINE"] == "django.db.backends.sqlite3":
    if _default["NAME"] and _default["NAME"] != ":memory:":
        Path(_default["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets readers go on while one writer writes; IMMEDIATE takes the write lock at BEGIN,
    # so two threads never deadlock upgrading a read lock.
    _default.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
elif _default["ENGINE"] == "django.db.backends.mysql":
    _default.setdefault("OPTIONS", {}).update(
        {
            "charset": "utf8mb4",
            # READ COMMITTED keeps the queue-like claims of due cursors free of gap locks.
            "isolation_level": "read committed",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
            # A database that is down or hangs fails a new connection after this long (the
            # API answers 503) instead of holding the request for the system's TCP timeout.
            "connect_timeout": env.int("DATABASE_CONNECT_TIMEOUT", default=5),
        }
    )
    _default.setdefault("TEST", {}).update(
        {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    )
    _default.setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    # A kept connection is checked before a request (or a task) uses it again, so after the
    # database restarts the first request of each thread does not fail on a dead connection.
    _default.setdefault("CONN_HEALTH_CHECKS", env.bool("CONN_HEALTH_CHECKS", default=True))
