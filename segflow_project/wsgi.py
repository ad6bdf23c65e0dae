import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segflow_project.settings")

django_application = get_wsgi_application()

# The calls apps make most (one event, a user's PUT or PATCH) skip Django's request machinery
# when they can (segflow/api/lean.py); everything else is Django's.
from segflow.api.lean import LeanIngest  # noqa: E402 - needs the apps loaded above

application = LeanIngest(django_application)

# What is loaded now lives as long as the process: out of the garbage collector's way.
from segflow import collector  # noqa: E402

collector.settle()
