from .env import env

# With no broker, segflow runs its tasks in the process that asks for them and a ticker thread
# does beat's work: the embedded default. With a broker, Celery workers and beat do.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
SEGFLOW_TASKS_INLINE = not CELERY_BROKER_URL
# Inline tasks that fail are logged and left for the schedule's sweep; tests make them raise.
SEGFLOW_INLINE_TASKS_RAISE = env.bool("SEGFLOW_INLINE_TASKS_RAISE", default=False)

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# The drains of the events and users queues have a broker queue of their own, which every worker
# also consumes (in turn with the default one): a drain is never stuck behind a backlog of
# deliveries and cursor steps, so accepted events are processed while emails are still going out.
CELERY_TASK_DEFAULT_QUEUE = "celery"
SEGFLOW_DRAIN_QUEUE = "segflow.drains"
CELERY_TASK_QUEUES = {CELERY_TASK_DEFAULT_QUEUE: {}, SEGFLOW_DRAIN_QUEUE: {}}
CELERY_TASK_ROUTES = {
    "segflow.drain_events": {"queue": SEGFLOW_DRAIN_QUEUE},
    "segflow.drain_users": {"queue": SEGFLOW_DRAIN_QUEUE},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# Handing a task to the broker is best effort (segflow/dispatch.py): it gives up after this
# long, logs it, and leaves the work to the schedule's sweep, so a broker that is down or hangs
# never turns a write that committed into an error, nor holds a request for long. Connecting and
# every command on the broker's sockets are bounded by it (kombu waits forever by default);
# keep it above a second, the time a worker's BRPOP waits on an empty queue.
SEGFLOW_BROKER_TIMEOUT_SECONDS = env.float("SEGFLOW_BROKER_TIMEOUT_SECONDS", default=2.0)
CELERY_BROKER_CONNECTION_TIMEOUT = SEGFLOW_BROKER_TIMEOUT_SECONDS
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_timeout": SEGFLOW_BROKER_TIMEOUT_SECONDS,
    "socket_connect_timeout": SEGFLOW_BROKER_TIMEOUT_SECONDS,
}
