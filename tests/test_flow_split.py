"""`rt.split`: a user's branch is a stable hash of the campaign and the user, recorded, given
back on replay, and counted per branch on the admin's campaign page. Through the API and the
schedule, with the test's clock; the hash's promises for any campaign, user and weights."""

from __future__ import annotations

import re
from collections import Counter
from math import sqrt

import pytest
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign, Cursor, CursorStep
from campaigns.steps import Runtime, choose_branch

from .conftest import sent
from .test_admin_counts import assert_counts_are_true

CONFIG = """
def ab(ctx, rt):
    branch = yield rt.split({"a": 50, "b": 50})
    ctx.user.branch = branch
    yield rt.wait(days=1)
    if branch == "a":
        yield rt.send_email("mail-a")
    else:
        yield rt.send_email("mail-b")

def subjects(ctx, rt):
    first = yield rt.split({"x": 1, "y": 3}, name="subject")
    second = yield rt.split({"x": 1, "y": 3}, name="layout")
    ctx.user.picked = first + second
    yield rt.wait(hours=1)

html = lambda user: "<p>hi</p>"
config = {
    "templates": {name: {"subject": name, "html": html} for name in ("mail-a", "mail-b")},
    "segments": {"all": {"sql": "SELECT u.id FROM users u"}},
    "campaigns": {
        "ab": {"segments": ["all"], "behavior": "static", "flow": ab},
        "subjects": {"segments": ["all"], "behavior": "static", "flow": subjects},
    },
}
"""

USERS = [f"user-{n:03d}" for n in range(40)]


def put(api, user_id: str, **attributes) -> None:
    body = {"attributes": {"email": f"{user_id}@example.com", **attributes}}
    response = api.put(f"/api/users/{user_id}", body, format="json")
    assert response.status_code in (200, 201), response.content


def attribute(api, user_id: str, name: str):
    return api.get(f"/api/users/{user_id}").json()["attributes"].get(name)


@pytest.mark.django_db(transaction=True)
def test_a_split_is_a_stable_hash_recorded_and_replayed(api, clock, write_config, pushed):
    pushed(write_config(CONFIG))
    for user_id in USERS:
        put(api, user_id)
    given = {user_id: attribute(api, user_id, "branch") for user_id in USERS}
    assert given == {u: choose_branch({"a": 50, "b": 50}, "ab", u) for u in USERS}
    assert set(given.values()) == {"a", "b"}
    recorded = dict(
        CursorStep.objects.filter(cursor__campaign__name="ab", kind="split").values_list(
            "cursor__user_id", "result"
        )
    )
    assert recorded == given

    # New weights with the same branches replay: whoever was given a branch keeps it, though
    # the new weights would put nearly everyone in "b".
    plan = pushed(write_config(CONFIG.replace('{"a": 50, "b": 50}', '{"a": 1, "b": 1000}')))
    assert "40 continue on the new flow" in plan.render()
    clock.advance_and_tick(days=1)
    for user_id in USERS:
        assert sent(user_id, campaign_name="ab") == [f"mail-{given[user_id]}"], user_id
    assert Cursor.objects.filter(campaign__name="ab", status="completed").count() == len(USERS)

    # Users who reach the split after the push get the new shares.
    later = [f"later-{n}" for n in range(20)]
    for user_id in later:
        put(api, user_id)
        assert attribute(api, user_id, "branch") == choose_branch(
            {"a": 1, "b": 1000}, "ab", user_id
        )
    # Named splits of one flow choose independently of each other, and as the hash says.
    for user_id in USERS:
        weights = {"x": 1, "y": 3}
        assert attribute(api, user_id, "picked") == choose_branch(
            weights, "subjects", user_id, "subject"
        ) + choose_branch(weights, "subjects", user_id, "layout")


@pytest.mark.django_db(transaction=True)
def test_a_split_whose_branches_change_diverges(api, clock, write_config, pushed):
    pushed(write_config(CONFIG))
    put(api, "ann")
    plan = pushed(write_config(CONFIG.replace('{"a": 50, "b": 50}', '{"a": 50, "c": 50}')))
    assert "1 end" in plan.render()
    cursor = Cursor.objects.get(user_id="ann", campaign__name="ab")
    assert cursor.status == "diverged" and "split({'a': 50, 'c': 50})" in cursor.end_reason


@pytest.mark.django_db(transaction=True)
def test_the_campaign_page_counts_users_per_branch(admin_client, api, clock, write_config, pushed):
    pushed(write_config(CONFIG))
    for user_id in USERS:
        put(api, user_id)
    put(api, USERS[0], plan="pro")  # a change to the user does not run the split again
    clock.advance_and_tick(days=1)
    assert_counts_are_true()

    def shown(campaign: str) -> dict[tuple[str, str], int]:
        page = admin_client.get(
            reverse(
                "admin:campaigns_campaign_change", args=[Campaign.objects.get(name=campaign).pk]
            )
        ).content.decode()
        rows = re.findall(
            r'data-split="([^"]*)" data-branch="([^"]+)">.*?<td class="sf-num">([\d,]+)</td>', page
        )
        return {(split, branch): int(n.replace(",", "")) for split, branch, n in rows}

    truth = Counter(
        CursorStep.objects.filter(cursor__campaign__name="ab", kind="split").values_list(
            "result", flat=True
        )
    )
    assert shown("ab") == {("", "a"): truth["a"], ("", "b"): truth["b"]}
    assert truth["a"] + truth["b"] == len(USERS)
    named = shown("subjects")
    assert {split for split, _ in named} == {"subject", "layout"}
    assert sum(n for (split, _), n in named.items() if split == "subject") == len(USERS)

    # A deleted user's branch is counted no more.
    gone = USERS[1]
    branch = CursorStep.objects.get(cursor__user_id=gone, cursor__campaign__name="ab", kind="split")
    assert api.delete(f"/api/users/{gone}").status_code == 204
    truth[branch.result] -= 1
    assert shown("ab") == {("", "a"): truth["a"], ("", "b"): truth["b"]}
    assert_counts_are_true()


# ---------------------------------------------------------------------------------------------
# The hash, for any campaign, user and weights.

names = st.text(min_size=1, max_size=30)
weights = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(1, 1000), st.floats(0.001, 1000)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=300)
@given(campaign=names, user_id=names, weights=weights, name=st.sampled_from(["", "t"]))
def test_the_same_user_and_campaign_always_get_the_same_branch(campaign, user_id, weights, name):
    branch = choose_branch(weights, campaign, user_id, name)
    assert branch in weights
    assert choose_branch(dict(reversed(list(weights.items()))), campaign, user_id, name) == branch
    # What the flow yields chooses the same, and is recorded as plain JSON.
    step = Runtime().split(weights, name=name)
    assert choose_branch(step.weights, campaign, user_id, step.name) == branch
    assert step.to_record()["weights"] == weights


@settings(max_examples=40)
@given(
    campaign=names,
    shares=st.lists(st.integers(1, 100), min_size=2, max_size=4),
)
def test_over_two_thousand_users_each_branch_gets_its_share(campaign, shares):
    weights = {f"branch-{i}": share for i, share in enumerate(shares)}
    users = 2000
    counts = Counter(choose_branch(weights, campaign, f"user-{n}") for n in range(users))
    total = sum(shares)
    for branch, share in weights.items():
        p = share / total
        expected, spread = users * p, sqrt(users * p * (1 - p))
        # Five standard deviations: a hash that favoured a branch would fall outside.
        assert abs(counts[branch] - expected) <= 5 * spread + 1, (branch, counts, weights)


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": 0}, {"a": -1}, {"a": True}, {"": 1}, {"a": float("nan")}, {"a": "50"}, [("a", 1)]],
)
def test_a_split_needs_named_branches_with_positive_weights(weights):
    with pytest.raises(ValueError, match="rt.split"):
        Runtime().split(weights)
