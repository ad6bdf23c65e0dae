"""Loading the config: good configs load, and every mistake is named by key and problem."""

from datetime import timedelta

import pytest

from segflow.config import ConfigError, load_config, source_of, validate_config

from .conftest import EXAMPLE_CONFIG


def flow(ctx, rt):
    yield rt.send_email("welcome")


def base(**overrides):
    config = {
        "templates": {"welcome": {"subject": "Hi", "html": lambda user: "<p>hi</p>"}},
        "segments": {"everyone": {"sql": "SELECT u.id FROM users u"}},
        "campaigns": {"hello": {"segments": ["everyone"], "behavior": "static", "flow": flow}},
        "transactions": {
            "receipt": {"event": "purchase", "subject": "Thanks", "html": lambda u, e: "<p>ok</p>"}
        },
    }
    for path, value in overrides.items():
        *parents, last = path.split("__")
        target = config
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return config


DELETE = object()


def test_the_example_config_loads():
    config = load_config(str(EXAMPLE_CONFIG))
    assert set(config.campaigns) == {"onboarding", "winback-campaign", "abandoned-cart"}
    assert config.campaigns["abandoned-cart"].goal == "purchase"
    assert config.campaigns["winback-campaign"].behavior == "dynamic"
    assert config.transactions["password-reset"].event == "reset_password_requested"
    assert config.segments["inactive-users"].refresh_every is not None  # time-based
    assert config.segments["new-users"].refresh_every is not None  # calls timezone.now()
    assert config.segments["big-spenders"].refresh_every is None


def test_a_minimal_config_loads():
    config = validate_config(base())
    assert config.campaigns["hello"].segments == ("everyone",)
    assert config.email_provider is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"campaigns__hello__segments": ["nobody"]},
            "campaigns.hello.segments: unknown segment 'nobody'",
        ),
        (
            {"campaigns__hello__exclude_segments": ["ghosts"]},
            "campaigns.hello.exclude_segments: unknown segment 'ghosts'",
        ),
        (
            {"campaigns__hello__exclude_segments": ["everyone"]},
            "campaigns.hello.exclude_segments: everyone is also in segments",
        ),
        ({"campaigns__hello__segments": []}, "campaigns.hello.segments: must name at least one"),
        (
            {"campaigns__hello__behavior": "sometimes"},
            "campaigns.hello.behavior: must be 'static' or 'dynamic', got 'sometimes'",
        ),
        (
            {"campaigns__hello__flow": lambda ctx, rt: None},
            "campaigns.hello.flow: must be a generator function",
        ),
        ({"campaigns__hello__flowz": flow}, "campaigns.hello: unknown key 'flowz'"),
        ({"segments__everyone": {}}, "segments.everyone: give exactly one of 'evaluator'"),
        (
            {"segments__everyone": {"sql": "SELECT id FROM users WHERE name LIKE 'a%'"}},
            "segments.everyone.sql: a lone '%' is not allowed",
        ),
        (
            {"segments__everyone": {"sql": "SELECT id FROM users WHERE x = %(cutoff)s"}},
            "segments.everyone.sql: uses parameters cutoff",
        ),
        (
            {"segments__everyone": {"evaluator": lambda a, b, c: a}},
            "segments.everyone.evaluator: must take (users) or (users, now)",
        ),
        (
            {"segments__everyone": {"sql": "SELECT 1 AS id; DELETE FROM users"}},
            "segments.everyone.sql: must be a single SELECT statement",
        ),
        ({"transactions__receipt__event": ""}, "transactions.receipt.event: must name the event"),
        (
            {"transactions__receipt__event": "   "},
            "transactions.receipt.event: must name the event",
        ),
        (
            {"transactions__receipt__subject": 42},
            "transactions.receipt.subject: must be a string or a function",
        ),
        (
            {"templates__welcome__html": "emails/missing.html"},
            "templates.welcome.html: template file 'emails/missing.html' does not exist",
        ),
        ({"templates__welcome__subject": DELETE}, "templates.welcome.subject: must be a string"),
        (
            {"email_provider": {"config": {"name": "carrier-pigeon"}, "from_address": "a@b.c"}},
            "email_provider.config.name: must be one of",
        ),
        (
            {"email_provider": {"config": {"name": "postmark"}, "from_address": "nobody"}},
            "email_provider.from_address: must be an email address",
        ),
        ({"segmentz": {}}, "config: unknown key 'segmentz'"),
    ],
)
def test_mistakes_are_named_by_key_and_problem(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_config(base(**overrides))
    assert message in str(error.value)


def test_a_flow_sending_an_unknown_template_is_refused_at_load():
    def typo(ctx, rt):
        yield rt.send_email("welcom")

    with pytest.raises(ConfigError, match=r"campaigns.hello.flow: sends template 'welcom'"):
        validate_config(base(campaigns__hello__flow=typo))


def test_template_files_are_found_beside_the_config(write_config):
    config = write_config(
        """
        from segflow.config import SegflowConfig
        config: SegflowConfig = {"templates": {"hi": {"subject": "Hi", "html": "emails/hi.html"}}}
        """,
        emails={"emails/hi.html": "<p>Hi {{ user.name }}</p>"},
    )
    assert config.templates["hi"].html_path.read_text() == "<p>Hi {{ user.name }}</p>"


def test_a_config_file_without_config_says_what_to_define(write_config):
    with pytest.raises(ConfigError, match="defines no `config`"):
        write_config("x = 1\n")


def test_a_config_file_that_raises_says_so(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="importing .*broken.py failed: RuntimeError"):
        load_config(str(path))


def test_time_based_segments_are_recognised():
    config = validate_config(
        {
            "segments": {
                "recent": {"evaluator": lambda users, now: users.filter(created_at__gte=now)},
                "plain": {"evaluator": lambda users: users.filter(attributes__plan="pro")},
                "sql-now": {"sql": "SELECT id FROM users WHERE created_at > %(now)s"},
                "hourly": {"sql": "SELECT id FROM users", "refresh_every": timedelta(hours=1)},
            }
        }
    )
    assert config.segments["recent"].refresh_every is not None
    assert config.segments["plain"].refresh_every is None
    assert config.segments["sql-now"].refresh_every is not None
    assert config.segments["hourly"].refresh_every == timedelta(hours=1)


def test_source_of_a_lambda_is_the_lambda_alone():
    pair = {"a": lambda user: f"Hi {user.name}", "b": lambda user, event: event.id}
    assert source_of(pair["a"]) == 'lambda user: f"Hi {user.name}"'
    assert source_of(pair["b"]) == "lambda user, event: event.id"


def test_a_template_file_outside_the_config_folder_is_refused(write_config):
    with pytest.raises(ConfigError, match=r"templates.hi.html: '../secret.html' is outside"):
        write_config(
            "config = {'templates': {'hi': {'subject': 'Hi', 'html': '../secret.html'}}}\n"
        )


def test_template_functions_get_as_many_arguments_as_they_take():
    from segflow.config import call_with_arity

    class Greeting:  # a callable that cannot be a dict key, so it cannot be cached by arity
        __hash__ = None

        def __call__(self, user):
            return f"Hi {user}"

    def subject(user, event=None):
        return f"{user} bought {event}"

    # The same call site meets functions of each kind, one after another and again.
    for _ in range(2):
        assert call_with_arity(lambda user: f"Hi {user}", "ann", "shoes") == "Hi ann"
        assert call_with_arity(lambda user, event: (user, event), "ann", "shoes") == (
            "ann",
            "shoes",
        )
        assert call_with_arity(subject, "ann", "shoes") == "ann bought shoes"
        assert call_with_arity(Greeting(), "ann", "shoes") == "Hi ann"
        # No signature to read (a builtin): every argument is passed.
        assert call_with_arity(max, "ann", "bob") == "bob"
