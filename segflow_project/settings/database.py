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
        }
    )
    _default.setdefault("TEST", {}).update(
        {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    )
    _default.setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
