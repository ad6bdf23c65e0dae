"""Settings for the test suite: the same modules, with the secrets a test run needs.

It lives outside the settings package because importing a module inside it would run the
package first, which refuses to start without SECRET_KEY.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "segflow-tests-only")
os.environ.setdefault("ALLOWED_HOSTS", "*")
os.environ.setdefault("SEGFLOW_INLINE_TASKS_RAISE", "1")
os.environ.setdefault("SEGFLOW_FORCE_DJANGO_EMAIL_BACKEND", "1")
# Pushed configs are cached outside the checkout.
os.environ.setdefault(
    "SEGFLOW_CONFIG_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"segflow-test-config-cache-{os.getpid()}"),
)
# The test client speaks plain http.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from segflow_project.settings import *  # noqa: E402,F403
