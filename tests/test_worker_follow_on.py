"""Inside a worker, a drain advances the cursors it claimed and an advance delivers the emails it
queued, in the same process right after the commit, without a hop through the broker
(SEGFLOW_WORKER_FOLLOW_ON); the tick still hands due cursors to all the workers.

The tasks run as a worker runs them (`apply`: Celery's own tracing, so the running task is
known); the broker is the controllable stand-in of test_broker_outage.py.
"""

from __future__ import annotations

import pytest
from celery import current_app

from campaigns.models import Cursor
from delivery.models import OutboxEmail

from .test_broker_outage import CONFIG
from .test_broker_outage import broker as broker  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def run_as_worker(task_name: str, *args):
    return current_app.tasks[f"segflow.{task_name}"].apply(args=args).get()


@pytest.fixture
def jane(api, broker, pushed, write_config, clock):  # noqa: F811
    pushed(write_config(CONFIG))
    response = api.put("/api/users/jane", {"attributes": {"email": "jane@x.io"}}, format="json")
    assert response.status_code == 201
    assert broker.tasks("drain_users") == [()]  # the doorbell rang for a drain
    return "jane"


def test_a_drain_advances_its_new_cursors_and_delivers_their_emails_itself(jane, broker):  # noqa: F811
    run_as_worker("drain_users")

    email = OutboxEmail.objects.get(user_id=jane)
    assert (email.template_name, email.status) == ("hello", "sent")
    assert Cursor.objects.get(user_id=jane).step_count == 2  # the email, then the wait
    # Nothing went through the broker for it.
    assert broker.tasks("advance_cursors") == [] and broker.tasks("deliver_emails") == []


def test_without_follow_on_the_drain_hands_its_cursors_to_the_broker(jane, broker, settings):  # noqa: F811
    settings.SEGFLOW_WORKER_FOLLOW_ON = False
    run_as_worker("drain_users")

    cursor = Cursor.objects.get(user_id=jane)
    assert broker.tasks("advance_cursors") == [([cursor.pk],)]
    assert not OutboxEmail.objects.exists()
    run_as_worker("advance_cursors", [cursor.pk])  # another worker takes it
    assert broker.tasks("deliver_emails") == [([OutboxEmail.objects.get().pk],)]


def test_the_tick_still_spreads_due_cursors_over_the_workers(jane, broker, clock):  # noqa: F811
    run_as_worker("drain_users")
    clock.advance(days=1, seconds=1)

    run_as_worker("run_due_cursors")

    cursor = Cursor.objects.get(user_id=jane)
    assert broker.tasks("advance_cursors") == [([cursor.pk],)]  # handed out, not run here
    assert list(OutboxEmail.objects.values_list("template_name", flat=True)) == ["hello"]
    # The worker that takes it delivers its email itself.
    run_as_worker("advance_cursors", [cursor.pk])
    assert broker.tasks("deliver_emails") == []
    assert OutboxEmail.objects.get(template_name="again").status == "sent"
