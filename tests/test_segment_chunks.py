"""A whole segment is evaluated range of user ids by range (SEGFLOW_SEGMENT_CHUNK_USERS): the
answer is the same as in one pass, and every user is in exactly one range."""

from datetime import timedelta

import pytest

from campaigns.models import Cursor
from segflow.models import Event, User
from segments.models import Segment, SegmentMembership
from segments.services import user_id_ranges

from .test_segments import statements

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = """
from datetime import timedelta

def hello(ctx, rt):
    yield rt.send_email("hello")

config = {
    "templates": {"hello": {"subject": "Hello", "html": lambda user: "<p>hi</p>"}},
    "segments": {
        "even": {"sql": "SELECT u.id FROM users u "
                        "WHERE JSON_EXTRACT(u.attributes, '$.n') %% 2 = 0"},
        "buyers": {"sql": "SELECT e.user_id AS id FROM events e WHERE e.name = 'purchase' "
                          "GROUP BY e.user_id HAVING COUNT(*) >= 2"},
        "veterans": {
            "sql": "SELECT u.id FROM users u WHERE u.created_at < %(cutoff)s",
            "params": lambda now: {"cutoff": now - timedelta(days=30)},
            "refresh_every": timedelta(hours=6),
        },
    },
    "campaigns": {"welcome-back": {"segments": ["veterans"], "behavior": "static",
                                   "flow": hello}},
}
"""


def members(name: str) -> set[str]:
    return set(
        SegmentMembership.objects.filter(segment__name=name).values_list("user_id", flat=True)
    )


@pytest.fixture
def users(clock):
    ids = [f"user-{n:02}" for n in range(20)]
    User.objects.bulk_create(
        User(id=i, attributes={"n": n, "email": f"{i}@example.com"}, evaluation_pending=False)
        for n, i in enumerate(ids)
    )
    for n, user_id in enumerate(ids):
        for _ in range(n % 3):  # 0, 1 or 2 purchases
            Event.objects.create(user_id=user_id, name="purchase", attributes={})
    Event.objects.update(processed_at=clock.now)
    return ids


def test_the_ranges_cover_every_user_once(users, settings):
    ranges = user_id_ranges(6)
    assert len(ranges) == 4  # 6 + 6 + 6 + 2
    assert ranges[0][0] is None and ranges[-1][1] is None
    assert all(ranges[n][1] == ranges[n + 1][0] for n in range(len(ranges) - 1))

    def range_of(user_id: str) -> list[int]:
        return [
            n
            for n, (low, high) in enumerate(ranges)
            if (low is None or user_id >= low) and (high is None or user_id < high)
        ]

    assert [len(range_of(u)) for u in users] == [1] * 20
    assert range_of("a-new-user") == [0] and range_of("zz-new-user") == [3]
    assert user_id_ranges(100) == [(None, None)]


def test_a_push_in_chunks_finds_the_same_members_as_one_pass(users, write_config, pushed, settings):
    settings.SEGFLOW_SEGMENT_CHUNK_USERS = 6
    with statements() as seen:
        pushed(write_config(CONFIG))
    assert members("even") == {f"user-{n:02}" for n in range(0, 20, 2)}
    assert members("buyers") == {f"user-{n:02}" for n in range(20) if n % 3 == 2}
    inserts = [sql for sql, _ in seen if "INTO segflow_answer_" in sql]
    assert len(inserts) == 3 * 4  # three segments, four ranges each

    # A later full evaluation takes leavers out and newcomers in, across ranges.
    User.objects.filter(pk__in=["user-00", "user-18"]).update(attributes={"n": 1})
    User.objects.filter(pk="user-19").update(attributes={"n": 2})
    from segflow.live_config import live_config
    from segflow.pipeline import refresh_segment

    row = Segment.objects.get(name="even")
    count, _ = refresh_segment(row, live_config.current().segments["even"], row.refreshed_at)
    assert (count.entered, count.left) == (1, 2)
    assert members("even") == {f"user-{n:02}" for n in (2, 4, 6, 8, 10, 12, 14, 16, 19)}


def test_a_time_based_segment_refreshes_range_by_range_and_enters_its_campaign(
    users, write_config, pushed, settings, clock
):
    settings.SEGFLOW_SEGMENT_CHUNK_USERS = 6
    pushed(write_config(CONFIG))
    assert members("veterans") == set()
    clock.advance_and_tick(days=31, every=timedelta(hours=6))
    assert members("veterans") == set(users)
    assert Cursor.objects.filter(campaign__name="welcome-back").count() == 20
    assert Cursor.objects.filter(status=Cursor.Status.COMPLETED).count() == 20
