import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env file is read when present, so a developer can keep secrets out of the shell history.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


class MissingSetting(ImproperlyConfigured):
    """A setting a deployment must give is not set.

    From the shell (`manage.py check`, `manage.py segflow_push`) it is said in one line, without
    a traceback: the message is the whole story. Whatever imports the settings itself (granian,
    Celery, tests) still gets an ImproperlyConfigured and stops as it does for one.
    """


def refuse(message: str):
    if not getattr(sys.excepthook, "segflow_one_line", False):
        sys.excepthook = _one_line(sys.excepthook)
    raise MissingSetting(message)


def _one_line(previous):
    def hook(kind, value, traceback):
        if isinstance(value, MissingSetting):
            print(value, file=sys.stderr)
        else:
            previous(kind, value, traceback)

    hook.segflow_one_line = True
    return hook
