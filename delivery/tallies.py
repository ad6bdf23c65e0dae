"""What an outbox row counts for on the campaign and home pages (see segflow/tallies.py).

An email counts under its campaign (or none, for a transaction) and template: once by status
(`sending` counts as `queued`: it is waiting to go out until the provider has it),
once more for each thing the provider reported (delivered, bounced, complained, opened,
clicked), under its reason when skipped or failed, and under the hour it was sent (and, failed,
the hour it failed). An unsubscribe that came from an email counts under that email's campaign
and template. Test sends (`delivery.test_send`) count nowhere.

Rows are counted when they are stored (`post_save`) and whenever their status or what the
provider reported changes: `delivery.sending` and `delivery.tracking` call `note_changed` in the
transaction of the change. A user's deletion uncounts their rows (`pre_delete`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models.signals import post_delete, post_save, pre_delete

from segflow import tallies
from segflow.models import User
from segflow.tallies import Key, key, reason_label

from .models import OutboxEmail, Unsubscription

KINDS = ("emails", "email_reasons", "sends", "email_failures")
TEST_KEY_PREFIX = "test:"
# What the provider reported, each counted once per email, by the field that records it.
REPORTED = ("delivered", "bounced", "complained", "opened", "clicked")
REASONED = (OutboxEmail.Status.SKIPPED, OutboxEmail.Status.FAILED)
FIELDS = (
    "key",
    "campaign_name",
    "template_name",
    "status",
    "reason",
    "sent_at",
    "updated_at",
    *(f"{name}_at" for name in REPORTED),
)


def is_test(outbox_key: str) -> bool:
    return outbox_key.startswith(TEST_KEY_PREFIX)


def counted_as(state: dict[str, Any]) -> list[Key]:
    """The keys an outbox row in `state` (FIELDS by name) counts under."""
    if is_test(state["key"]):
        return []
    owner, template, status = state["campaign_name"], state["template_name"], state["status"]
    # An email being handed to the provider right now still counts as queued: its claim
    # (queued -> sending, once per email) then changes no count and costs no write.
    counted = OutboxEmail.Status.QUEUED if status == OutboxEmail.Status.SENDING else status
    keys = [key("emails", owner, template, counted)]
    if status in REASONED:
        keys.append(
            key("email_reasons", owner, template, f"{status}: {reason_label(state['reason'])}")
        )
    keys += [key("emails", owner, template, name) for name in REPORTED if state[f"{name}_at"]]
    if state["sent_at"]:
        keys.append(key("sends", owner, template, hour=state["sent_at"]))
    if status == OutboxEmail.Status.FAILED:
        keys.append(key("email_failures", owner, template, hour=state["updated_at"]))
    return keys


def state_of(row: OutboxEmail, **changes) -> dict[str, Any]:
    state = {name: getattr(row, name) for name in FIELDS}
    state.update((name, value) for name, value in changes.items() if name in state)
    return state


def note_changed(row: OutboxEmail, before: dict[str, Any] | None = None, **changes) -> None:
    """The row (as loaded, or as `before` overrides it) changed by `changes`: count that."""
    old = state_of(row, **(before or {}))
    new = {**old, **{k: v for k, v in changes.items() if k in old}}
    tallies.add(tallies.difference(counted_as(old), counted_as(new)))


def change_of(row: OutboxEmail, before: dict[str, Any] | None = None, **changes) -> Counter[Key]:
    """What `note_changed` would count, without writing it: for a batch to add up."""
    old = state_of(row, **(before or {}))
    new = {**old, **{k: v for k, v in changes.items() if k in old}}
    return tallies.difference(counted_as(old), counted_as(new))


def add_change(change: Counter[Key]) -> None:
    """Record a change summed up from several `change_of`, in the caller's transaction."""
    tallies.add(change)


def note_created(rows: Iterable[OutboxEmail]) -> None:
    """These rows were just inserted together (a multi-row insert sends no `post_save`)."""
    change: Counter[Key] = Counter()
    for row in rows:
        change.update(counted_as(state_of(row)))
    tallies.add(change)


def note_rows_changed(rows: Iterable[OutboxEmail], **changes) -> None:
    """These rows (as loaded) were all changed by `changes`: count that."""
    change: Counter[Key] = Counter()
    for row in rows:
        old = state_of(row)
        new = {**old, **{k: v for k, v in changes.items() if k in old}}
        change.update(tallies.difference(counted_as(old), counted_as(new)))
    tallies.add(change)


def note_rows_moved(rows: Iterable[OutboxEmail], before: dict[str, Any]) -> None:
    """These rows (as they are now) were, before their last change, as `before` says."""
    change: Counter[Key] = Counter()
    for row in rows:
        new = state_of(row)
        change.update(tallies.difference(counted_as({**new, **before}), counted_as(new)))
    tallies.add(change)


def _saved(sender, instance: OutboxEmail, created: bool, **kwargs) -> None:
    if created:
        tallies.add(Counter(counted_as(state_of(instance))))


# Users being deleted in this thread: their unsubscriptions are uncounted with their emails.
_deleting = threading.local()


def _user_deleted(sender, instance: User, **kwargs) -> None:
    """A user's emails and unsubscribe go with them: uncount them."""
    users = getattr(_deleting, "users", set())
    users.add(instance.pk)
    _deleting.users = users
    change: Counter[Key] = Counter()
    for values in OutboxEmail.objects.filter(user_id=instance.pk).values(*FIELDS):
        change.update(tallies.difference(counted_as(values), []))
    for owner, template in Unsubscription.objects.filter(
        user_id=instance.pk, outbox_email__isnull=False
    ).values_list("outbox_email__campaign_name", "outbox_email__template_name"):
        change[key("emails", owner, template, "unsubscribed")] -= 1
    tallies.add(change)


def _user_gone(sender, instance: User, **kwargs) -> None:
    getattr(_deleting, "users", set()).discard(instance.pk)


def _unsubscribed(sender, instance: Unsubscription, created: bool, **kwargs) -> None:
    if created:
        _count_unsubscription(instance, 1)


def _resubscribed(sender, instance: Unsubscription, **kwargs) -> None:
    if instance.user_id not in getattr(_deleting, "users", set()):
        _count_unsubscription(instance, -1)


def _count_unsubscription(unsubscription: Unsubscription, n: int) -> None:
    if unsubscription.outbox_email_id is None:
        return
    email = (
        OutboxEmail.objects.filter(pk=unsubscription.outbox_email_id)
        .values_list("key", "campaign_name", "template_name")
        .first()
    )
    if email is not None and not is_test(email[0]):
        tallies.add({key("emails", email[1], email[2], "unsubscribed"): n})


def recount() -> Counter[Key]:
    """Every outbox row's counts, from the tables: what the tallies of KINDS must equal."""
    counts: Counter[Key] = Counter()
    hour = _hour_sql
    not_test = "o.key NOT LIKE 'test:%%'"
    reported = ", ".join(f"SUM(CASE WHEN {name}_at IS NULL THEN 0 ELSE 1 END)" for name in REPORTED)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT campaign_name, template_name, status, COUNT(*), {reported} "
            f"FROM outbox o WHERE {not_test} GROUP BY 1, 2, 3",
            [],
        )
        for owner, template, status, n, *numbers in cursor.fetchall():
            counted = OutboxEmail.Status.QUEUED if status == OutboxEmail.Status.SENDING else status
            counts[key("emails", owner, template, counted)] += n
            for name, number in zip(REPORTED, numbers, strict=True):
                counts[key("emails", owner, template, name)] += int(number or 0)
        cursor.execute(
            "SELECT campaign_name, template_name, status, reason, COUNT(*) FROM outbox o "
            f"WHERE status IN (%s, %s) AND {not_test} GROUP BY 1, 2, 3, 4",
            list(REASONED),
        )
        for owner, template, status, reason, n in cursor.fetchall():
            counts[key("email_reasons", owner, template, f"{status}: {reason_label(reason)}")] += n
        cursor.execute(
            f"SELECT campaign_name, template_name, {hour('sent_at')}, COUNT(*) FROM outbox o "
            f"WHERE sent_at IS NOT NULL AND {not_test} GROUP BY 1, 2, 3",
            [],
        )
        for owner, template, sent_hour, n in cursor.fetchall():
            counts[key("sends", owner, template, hour=tallies._as_datetime(sent_hour))] += n
        cursor.execute(
            f"SELECT campaign_name, template_name, {hour('updated_at')}, COUNT(*) FROM outbox o "
            f"WHERE status = %s AND {not_test} GROUP BY 1, 2, 3",
            [OutboxEmail.Status.FAILED],
        )
        for owner, template, failed_hour, n in cursor.fetchall():
            when = tallies._as_datetime(failed_hour)
            counts[key("email_failures", owner, template, hour=when)] += n
        cursor.execute(
            "SELECT o.campaign_name, o.template_name, COUNT(*) FROM email_unsubscriptions u "
            f"JOIN outbox o ON o.id = u.outbox_email_id WHERE {not_test} GROUP BY 1, 2",
            [],
        )
        for owner, template, n in cursor.fetchall():
            counts[key("emails", owner, template, "unsubscribed")] += n
    return +counts


def _hour_sql(column: str) -> str:
    if connection.vendor == "mysql":
        return f"DATE_FORMAT({column}, '%%Y-%%m-%%d %%H:00:00')"
    return f"strftime('%%Y-%%m-%%d %%H:00:00', {column})"


def connect() -> None:
    post_save.connect(_saved, sender=OutboxEmail, dispatch_uid="segflow-outbox-tallies-save")
    pre_delete.connect(_user_deleted, sender=User, dispatch_uid="segflow-outbox-tallies-user")
    post_delete.connect(_user_gone, sender=User, dispatch_uid="segflow-outbox-tallies-user-gone")
    post_save.connect(
        _unsubscribed, sender=Unsubscription, dispatch_uid="segflow-unsubscribe-tallies"
    )
    post_delete.connect(
        _resubscribed, sender=Unsubscription, dispatch_uid="segflow-resubscribe-tallies"
    )
