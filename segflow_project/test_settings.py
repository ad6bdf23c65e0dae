"""Settings for the test suite: the same modules, with the secrets a test run needs.

It lives outside the settings package because importing a module inside it would run the
package first, which refuses to start without SECRET_KEY.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("SECRET_KEY", "segflow-tests-only")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SEGFLOW_INLINE_TASKS_RAISE", "1")
# Rings publish in line, so a test sees the drain task it caused at once.
os.environ.setdefault("SEGFLOW_DOORBELL_THREAD", "0")
os.environ.setdefault("SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND", "1")
# Pushed configs are cached outside the checkout, in a folder of this run's, removed at its end.
_cache_dir = os.path.join(tempfile.gettempdir(), f"segflow-test-config-cache-{os.getpid()}")
if os.environ.setdefault("SEGFLOW_CONFIG_CACHE_DIR", _cache_dir) == _cache_dir:
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
# The test client speaks plain http.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from segflow_project.settings import *  # noqa: E402,F403
