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
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
