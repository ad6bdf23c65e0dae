"""The example config: a Python twin of every example in the original Segflow README.

Push it with `.venv/bin/python manage.py segflow_push`. Email templates live in emails/ beside
this file.
"""

import os
from datetime import timedelta

from django.utils import timezone

from segflow.config import SegflowConfig


def onboarding(ctx, rt):
    yield rt.send_email("welcome")
    yield rt.wait(days=1)
    if not ctx.user.profileCompleted:  # a missing attribute reads as None
        yield rt.send_email("complete-profile-reminder")
        yield rt.wait(days=3)
    yield rt.wait(days=3)
    yield rt.send_email("feature-highlights")


def winback(ctx, rt):
    # Ten emails with exponential backoff: 1, 2, 4 ... days apart. The campaign is dynamic, so a
    # user who logs in again leaves the segment and the campaign at once.
    for i in range(10):
        yield rt.send_email("winback")
        yield rt.wait(days=2**i)


def abandoned_cart(ctx, rt):
    # A day to finish the purchase; a reminder if they did not. A purchase at any point is the
    # campaign's goal: it ends the user's cursor as converted, so the reminder never goes to a
    # buyer and the campaign page counts them.
    purchase = yield rt.wait_for_event("purchase", timeout=timedelta(days=1))
    if purchase is None:
        yield rt.send_email("cart-reminder")
        yield rt.wait(days=2)  # a purchase in these two days still counts as converted


def _email_provider():
    # The provider is picked here; its secrets never are: POSTMARK_SERVER_TOKEN, or the AWS
    # credentials and region, stay in the environment (see docs/email.md). Without either,
    # Django's EMAIL_BACKEND delivers: the console, in the embedded default.
    from_address = os.environ.get("SEGFLOW_FROM_ADDRESS", "hello@example.com")
    default = "postmark" if os.environ.get("POSTMARK_SERVER_TOKEN") else "django"
    name = os.environ.get("SEGFLOW_EMAIL_PROVIDER", default)
    if name == "postmark":
        settings = {
            "name": "postmark",
            "message_stream": "outbound",  # transactional email
            "broadcast_message_stream": "broadcast",  # campaigns: Postmark wants bulk apart
        }
    elif name == "amazon_ses":
        settings = {"name": "amazon_ses"}  # the region comes from AWS_REGION
    else:
        settings = {"name": "django"}
    return {"config": settings, "from_address": from_address}


config: SegflowConfig = {
    "email_provider": _email_provider(),
    "templates": {
        "welcome": {
            "subject": lambda user: f"Welcome {user.name}!",
            "html": "emails/welcome.html",
        },
        "complete-profile-reminder": {
            "subject": "Finish setting up your profile",
            "html": "emails/complete_profile_reminder.html",
        },
        "feature-highlights": {
            "subject": lambda user: f"{user.name}, three things to try this week",
            "html": "emails/feature_highlights.html",
        },
        "winback": {
            "subject": lambda user: f"We miss you {user.name}!",
            "html": "emails/winback.html",
        },
        "cart-reminder": {
            "subject": "You left something in your cart",
            "html": "emails/cart_reminder.html",
        },
    },
    "segments": {
        # A QuerySet over users, built by a function ...
        "new-users": {
            "evaluator": lambda users: users.filter(
                created_at__gte=timezone.now() - timedelta(days=7)
            ),
        },
        # ... or SQL returning a column `id`, against the tables `users` and `events`.
        "big-spenders": {
            "sql": "SELECT u.id FROM users u JOIN events e ON e.user_id = u.id "
            "WHERE e.name = 'purchase' GROUP BY u.id "
            "HAVING SUM(JSON_EXTRACT(e.attributes, '$.amount')) > 1000",
        },
        # Time alone changes this answer, so the scheduler re-evaluates it: a user who does
        # nothing at all enters winback 30 days after their last login. A `login` event, or a
        # newer lastLoginAt, takes them out again at once.
        "inactive-users": {
            "sql": "SELECT u.id FROM users u "
            "WHERE JSON_UNQUOTE(JSON_EXTRACT(u.attributes, '$.lastLoginAt')) < %(cutoff)s "
            "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.id "
            "AND e.name = 'login' AND e.created_at >= %(since)s)",
            "params": lambda now: {
                "cutoff": (now - timedelta(days=30)).isoformat(),
                "since": now - timedelta(days=30),
            },
        },
        # Users who started a checkout in the last week: a `checkout_started` event enters them
        # into abandoned-cart at once; a week later they leave the segment, and their next
        # checkout can start the campaign again.
        "started-checkout": {
            "sql": "SELECT e.user_id AS id FROM events e "
            "WHERE e.name = 'checkout_started' AND e.created_at >= %(since)s GROUP BY e.user_id",
            "params": lambda now: {"since": now - timedelta(days=7)},
        },
    },
    "campaigns": {
        "onboarding": {
            "segments": ["new-users"],
            "behavior": "static",
            "flow": onboarding,
        },
        "winback-campaign": {
            "segments": ["inactive-users"],
            "behavior": "dynamic",  # exits when the user becomes active again
            "flow": winback,
        },
        "abandoned-cart": {
            "segments": ["started-checkout"],
            "behavior": "dynamic",
            "flow": abandoned_cart,
            "goal": "purchase",  # a buyer leaves the campaign as converted
        },
    },
    "transactions": {
        "purchase-confirmation": {
            "event": "purchase",
            "subject": lambda user, event: f"Order Confirmed, {user.name}!",
            "html": "emails/purchase_confirmation.html",
        },
        "password-reset": {
            "event": "reset_password_requested",
            "subject": "Reset Your Password",
            "html": "emails/password_reset.html",
        },
    },
}
