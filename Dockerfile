# syntax=docker/dockerfile:1
# The segflow image: the web process, workers, beat and the migrate-and-push job all run it.
FROM python:3.12-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb-dev pkg-config gcc \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["mysql"]))
PY
RUN pip install --no-cache-dir -r /tmp/requirements.txt

COPY . .
ENV DJANGO_SETTINGS_MODULE=segflow_project.settings PYTHONUNBUFFERED=1
RUN DEBUG=1 python manage.py collectstatic --noinput

RUN useradd --create-home segflow && mkdir -p /app/var && chown -R segflow /app/var
USER segflow
EXPOSE 8000
# granian: a WSGI server whose HTTP handling is compiled (Rust); per request it costs less CPU
# than gunicorn did (bench/README.md). 3 processes of 4 threads for the application.
CMD ["granian", "--interface", "wsgi", "--host", "0.0.0.0", "--port", "8000", "--workers", "3", "--blocking-threads", "4", "--no-ws", "--respawn-failed-workers", "segflow_project.wsgi:application"]
