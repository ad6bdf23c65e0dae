"""Loading and validating the segflow config: one Python file that defines everything.

A config file defines a module-level `config` dict (see `SegflowConfig`). `load_config` imports it,
checks every key and returns a `Config` of plain definitions. Errors name the key path and the
problem, for example ``campaigns.onboarding.behavior: must be 'static' or 'dynamic', got 'often'``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

# ---------------------------------------------------------------------------------------------
# The public shape of a config, for type checkers and for people reading it.


class EmailProviderSettings(TypedDict):
    name: Literal["postmark", "amazon_ses", "django"]
    # Postmark: the server token belongs in POSTMARK_SERVER_TOKEN; `api_key` still works.
    api_key: NotRequired[str]
    server_token: NotRequired[str]
    message_stream: NotRequired[str]
    broadcast_message_stream: NotRequired[str]
    # Amazon SES: credentials come from the environment (boto3).
    region: NotRequired[str]
    configuration_set: NotRequired[str]


class EmailProviderConfig(TypedDict):
    config: EmailProviderSettings
    from_address: str
    reply_to: NotRequired[str]


class TemplateConfig(TypedDict):
    subject: str | Callable[..., str]
    html: str | Callable[..., str]


class SegmentConfig(TypedDict, total=False):
    evaluator: Callable[..., Any]
    sql: str
    params: Callable[..., dict[str, Any]]
    refresh_every: timedelta | None


class CampaignConfig(TypedDict):
    segments: list[str]
    exclude_segments: NotRequired[list[str]]
    behavior: Literal["static", "dynamic"]
    flow: Callable[..., Iterator[Any]]


class TransactionConfig(TypedDict):
    event: str
    subject: str | Callable[..., str]
    html: str | Callable[..., str]


class SegflowConfig(TypedDict, total=False):
    email_provider: EmailProviderConfig
    templates: dict[str, TemplateConfig]
    segments: dict[str, SegmentConfig]
    campaigns: dict[str, CampaignConfig]
    transactions: dict[str, TransactionConfig]


# ---------------------------------------------------------------------------------------------
# The loaded, validated definitions.


class ConfigError(Exception):
    """The config is wrong; the message names the key and the problem."""


PROVIDERS = ("postmark", "amazon_ses", "django")
BEHAVIORS = ("static", "dynamic")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class EmailProviderDef:
    name: str
    settings: dict[str, Any]
    from_address: str
    reply_to: str = ""

    def describe(self) -> dict[str, Any]:
        """What a push shows and stores: never the secrets."""
        from .providers import provider_named

        described: dict[str, Any] = {
            "name": self.name,
            "from_address": self.from_address,
            "reply_to": self.reply_to,
        }
        options = provider_named(self.name).describe(self.settings)
        if options:  # (left out when empty, so older pushes compare equal)
            described["options"] = options
        return described


@dataclass(frozen=True)
class EmailContentDef:
    """What templates and transactions share: a subject and an HTML body."""

    name: str
    subject: str | Callable[..., str]
    html: str | Callable[..., str]
    html_path: Path | None
    source: str
    fingerprint: str


@dataclass(frozen=True)
class TemplateDef(EmailContentDef):
    pass


@dataclass(frozen=True)
class TransactionDef(EmailContentDef):
    event: str = ""


@dataclass(frozen=True)
class SegmentDef:
    name: str
    sql: str | None
    evaluator: Callable[..., Any] | None
    params: Callable[..., dict[str, Any]] | None
    # How often the whole segment is re-evaluated because time alone changes its answer.
    refresh_every: timedelta | None
    source: str
    fingerprint: str

    @property
    def kind(self) -> str:
        return "sql" if self.sql is not None else "evaluator"


@dataclass(frozen=True)
class CampaignDef:
    name: str
    segments: tuple[str, ...]
    exclude_segments: tuple[str, ...]
    behavior: str
    flow: Callable[..., Iterator[Any]]
    source: str
    fingerprint: str
    flow_fingerprint: str


@dataclass
class Config:
    location: str
    base_dir: Path
    email_provider: EmailProviderDef | None
    templates: dict[str, TemplateDef] = field(default_factory=dict)
    segments: dict[str, SegmentDef] = field(default_factory=dict)
    campaigns: dict[str, CampaignDef] = field(default_factory=dict)
    transactions: dict[str, TransactionDef] = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        parts = {
            "email_provider": self.email_provider.describe() if self.email_provider else None,
            "templates": {k: v.fingerprint for k, v in self.templates.items()},
            "segments": {k: v.fingerprint for k, v in self.segments.items()},
            "campaigns": {k: v.fingerprint for k, v in self.campaigns.items()},
            "transactions": {k: v.fingerprint for k, v in self.transactions.items()},
        }
        return _sha256(json.dumps(parts, sort_keys=True))

    def transactions_for_event(self, event_name: str) -> list[TransactionDef]:
        return [t for t in self.transactions.values() if t.event == event_name]


# ---------------------------------------------------------------------------------------------
# Loading.


def import_config_module(location: str) -> tuple[Any, Path]:
    """Import the config from a file path or a dotted module name, fresh each time."""
    path = Path(location)
    if location.endswith(".py") or path.exists():
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"config: no file at {path}")
        module_name = f"segflow_user_config_{_sha256(str(path))[:12]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"config: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"config: importing {path} failed: {exc!r}") from exc
        return module, path.parent
    try:
        if location in sys.modules:
            module = importlib.reload(sys.modules[location])
        else:
            module = importlib.import_module(location)
    except Exception as exc:
        raise ConfigError(f"config: importing module {location!r} failed: {exc!r}") from exc
    module_file = getattr(module, "__file__", None)
    return module, Path(module_file).resolve().parent if module_file else Path.cwd()


def load_config(location: str) -> Config:
    """Import and validate the config at `location` (a .py path or a dotted module name)."""
    module, base_dir = import_config_module(location)
    raw = getattr(module, "config", None)
    if raw is None:
        raise ConfigError(
            f"config: {location} defines no `config`; define `config: SegflowConfig = {{...}}`"
        )
    return validate_config(raw, location=location, base_dir=base_dir)


def validate_config(
    raw: Any, *, location: str = "<config>", base_dir: Path | None = None
) -> Config:
    """Check a config dict and turn it into definitions. Raises ConfigError naming the key."""
    base_dir = base_dir or Path.cwd()
    _require_mapping(raw, "config")
    _reject_unknown_keys(
        raw, "config", {"email_provider", "templates", "segments", "campaigns", "transactions"}
    )
    config = Config(
        location=location,
        base_dir=base_dir,
        email_provider=_email_provider(raw.get("email_provider"), "email_provider"),
    )
    for name, item in _named_items(raw, "templates"):
        config.templates[name] = _email_content(
            TemplateDef, name, item, f"templates.{name}", base_dir, subject_args=1
        )
    for name, item in _named_items(raw, "segments"):
        config.segments[name] = _segment(name, item, f"segments.{name}")
    for name, item in _named_items(raw, "transactions"):
        config.transactions[name] = _transaction(name, item, f"transactions.{name}", base_dir)
    for name, item in _named_items(raw, "campaigns"):
        config.campaigns[name] = _campaign(name, item, f"campaigns.{name}", config)
    return config


def _email_provider(raw: Any, path: str) -> EmailProviderDef | None:
    if raw is None:
        return None
    _require_mapping(raw, path)
    _reject_unknown_keys(raw, path, {"config", "from_address", "reply_to"})
    settings = raw.get("config")
    _require_mapping(settings, f"{path}.config")
    name = settings.get("name")
    if name not in PROVIDERS:
        raise ConfigError(
            f"{path}.config.name: must be one of "
            f"{', '.join(repr(p) for p in PROVIDERS)}, got {name!r}"
        )
    from_address = raw.get("from_address")
    if not isinstance(from_address, str) or "@" not in from_address:
        raise ConfigError(f"{path}.from_address: must be an email address, got {from_address!r}")
    reply_to = raw.get("reply_to", "")
    if not isinstance(reply_to, str) or (reply_to and "@" not in reply_to):
        raise ConfigError(f"{path}.reply_to: must be an email address, got {reply_to!r}")
    from .providers import provider_named

    provider_settings = {k: v for k, v in settings.items() if k != "name"}
    provider_named(name).check_settings(provider_settings, f"{path}.config")
    return EmailProviderDef(
        name=name,
        settings=provider_settings,
        from_address=from_address,
        reply_to=reply_to,
    )


def _email_content(
    cls, name: str, raw: Any, path: str, base_dir: Path, *, subject_args: int, **extra: Any
):
    _require_mapping(raw, path)
    allowed = {"subject", "html"} | ({"event"} if cls is TransactionDef else set())
    _reject_unknown_keys(raw, path, allowed)
    subject = raw.get("subject")
    if isinstance(subject, str):
        if not subject.strip():
            raise ConfigError(f"{path}.subject: must not be empty")
    elif callable(subject):
        _check_arity(subject, f"{path}.subject", subject_args)
    else:
        raise ConfigError(f"{path}.subject: must be a string or a function, got {subject!r}")

    html = raw.get("html")
    html_path = None
    if isinstance(html, str):
        if not html.strip():
            raise ConfigError(f"{path}.html: must name a template file, got an empty string")
        html_path = (base_dir / html).resolve()
        if not html_path.is_relative_to(base_dir.resolve()):
            raise ConfigError(
                f"{path}.html: {html!r} is outside the config file's folder; keep email "
                "templates beside the config"
            )
        if not html_path.is_file():
            raise ConfigError(
                f"{path}.html: template file {html!r} does not exist "
                f"(looked for {html_path}; paths are relative to the config file's folder)"
            )
        html_source = html_path.read_text(encoding="utf-8")
    elif callable(html):
        _check_arity(html, f"{path}.html", subject_args)
        html_source = source_of(html)
    else:
        raise ConfigError(f"{path}.html: must be a template file name or a function, got {html!r}")

    subject_source = subject if isinstance(subject, str) else source_of(subject)
    source = (
        f"subject: {subject_source}\nhtml: {html if isinstance(html, str) else ''}\n{html_source}"
    )
    fingerprint = _sha256(
        json.dumps(
            [
                subject_source,
                html if isinstance(html, str) else "",
                html_source,
                extra.get("event", ""),
            ]
        )
    )
    return cls(
        name=name,
        subject=subject,
        html=html,
        html_path=html_path,
        source=source,
        fingerprint=fingerprint,
        **extra,
    )


def _transaction(name: str, raw: Any, path: str, base_dir: Path) -> TransactionDef:
    _require_mapping(raw, path)
    event = raw.get("event")
    if not isinstance(event, str) or not event.strip():
        raise ConfigError(f"{path}.event: must name the event that sends this email, got {event!r}")
    if len(event) > MAX_NAME_LENGTH:
        raise ConfigError(f"{path}.event: longer than {MAX_NAME_LENGTH} characters")
    return _email_content(TransactionDef, name, raw, path, base_dir, subject_args=2, event=event)


_NAMED_PARAM = re.compile(r"%\((\w+)\)s")
_ESCAPED_OR_PARAM = re.compile(r"%%|%\(\w+\)s")
_TIME_FUNCTIONS = re.compile(
    r"\b(NOW|CURRENT_TIMESTAMP|CURRENT_DATE|CURDATE|CURTIME|UTC_TIMESTAMP|SYSDATE)\b|'now'",
    re.IGNORECASE,
)


def _segment(name: str, raw: Any, path: str) -> SegmentDef:
    _require_mapping(raw, path)
    _reject_unknown_keys(raw, path, {"evaluator", "sql", "params", "refresh_every"})
    sql, evaluator, params = raw.get("sql"), raw.get("evaluator"), raw.get("params")
    if (sql is None) == (evaluator is None):
        raise ConfigError(
            f"{path}: give exactly one of 'evaluator' (a function) or 'sql' (a query)"
        )

    time_based = False
    if sql is not None:
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError(f"{path}.sql: must be a non-empty SQL query returning a column `id`")
        if "%" in _ESCAPED_OR_PARAM.sub("", sql):
            raise ConfigError(
                f"{path}.sql: a lone '%' is not allowed; write '%%' for a literal percent sign "
                "(segflow binds values as %(name)s parameters)"
            )
        if ";" in sql.strip().rstrip(";"):
            raise ConfigError(f"{path}.sql: must be a single SELECT statement")
        if params is not None and not callable(params):
            raise ConfigError(f"{path}.params: must be a function of `now` returning a dict")
        if params is not None:
            _check_arity(params, f"{path}.params", 1)
        names = set(_NAMED_PARAM.findall(sql))
        if params is None and names - {"now"}:
            unknown = ", ".join(sorted(names - {"now"}))
            raise ConfigError(
                f"{path}.sql: uses parameters {unknown} but the segment has no 'params' function "
                "to give them; only %(now)s is built in"
            )
        time_based = "now" in names or params is not None or bool(_TIME_FUNCTIONS.search(sql))
        source = sql.strip() + (f"\n-- params: {source_of(params)}" if params else "")
    else:
        if params is not None:
            raise ConfigError(f"{path}.params: only SQL segments take params; evaluators get `now`")
        if not callable(evaluator):
            raise ConfigError(f"{path}.evaluator: must be a function taking the users QuerySet")
        arity = _positional_arity(evaluator)
        if arity not in (1, 2):
            raise ConfigError(
                f"{path}.evaluator: must take (users) or (users, now), takes {arity} arguments"
            )
        time_based = arity == 2 or _mentions_name(evaluator, "now")
        source = source_of(evaluator)

    refresh_every = None
    if "refresh_every" in raw:
        refresh_every = raw["refresh_every"]
        if refresh_every is not None and (
            not isinstance(refresh_every, timedelta) or refresh_every.total_seconds() < 1
        ):
            raise ConfigError(f"{path}.refresh_every: must be a timedelta of at least one second")
    elif time_based:
        refresh_every = _default_refresh()
    return SegmentDef(
        name=name,
        sql=sql.strip().rstrip(";") if sql is not None else None,
        evaluator=evaluator,
        params=params,
        refresh_every=refresh_every,
        source=source,
        fingerprint=_sha256(
            json.dumps([source, refresh_every.total_seconds() if refresh_every else None])
        ),
    )


def _default_refresh() -> timedelta:
    """settings.SEGFLOW_TIME_SEGMENT_REFRESH_SECONDS, or a minute outside Django."""
    from django.conf import settings

    if settings.configured:
        return timedelta(seconds=getattr(settings, "SEGFLOW_TIME_SEGMENT_REFRESH_SECONDS", 60))
    return timedelta(minutes=1)


def _campaign(name: str, raw: Any, path: str, config: Config) -> CampaignDef:
    _require_mapping(raw, path)
    _reject_unknown_keys(raw, path, {"segments", "exclude_segments", "behavior", "flow"})
    segments = _segment_list(raw.get("segments"), f"{path}.segments", config, required=True)
    exclude = _segment_list(raw.get("exclude_segments", []), f"{path}.exclude_segments", config)
    overlap = set(segments) & set(exclude)
    if overlap:
        raise ConfigError(
            f"{path}.exclude_segments: {', '.join(sorted(overlap))} is also in segments, "
            "so nobody could ever enter"
        )
    behavior = raw.get("behavior", "static")
    if behavior not in BEHAVIORS:
        raise ConfigError(f"{path}.behavior: must be 'static' or 'dynamic', got {behavior!r}")
    flow = raw.get("flow")
    if not inspect.isgeneratorfunction(flow):
        raise ConfigError(
            f"{path}.flow: must be a generator function (a def with `yield rt.send_email(...)` "
            f"or `yield rt.wait(...)` in it), got {flow!r}"
        )
    if _positional_arity(flow) != 2:
        raise ConfigError(f"{path}.flow: must take two arguments, (ctx, rt)")
    flow_source = source_of(flow)
    for template in _literal_send_email_templates(flow_source):
        if template not in config.templates:
            raise ConfigError(
                f"{path}.flow: sends template {template!r}, which is not in templates "
                f"(known: {', '.join(sorted(config.templates)) or 'none'})"
            )
    flow_fingerprint = _sha256(flow_source)
    fingerprint = _sha256(json.dumps([segments, exclude, behavior, flow_fingerprint]))
    return CampaignDef(
        name=name,
        segments=tuple(segments),
        exclude_segments=tuple(exclude),
        behavior=behavior,
        flow=flow,
        source=flow_source,
        fingerprint=fingerprint,
        flow_fingerprint=flow_fingerprint,
    )


def _segment_list(raw: Any, path: str, config: Config, *, required: bool = False) -> list[str]:
    if not isinstance(raw, list | tuple) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{path}: must be a list of segment names, got {raw!r}")
    if required and not raw:
        raise ConfigError(f"{path}: must name at least one segment")
    for segment in raw:
        if segment not in config.segments:
            raise ConfigError(
                f"{path}: unknown segment {segment!r} "
                f"(known: {', '.join(sorted(config.segments)) or 'none'})"
            )
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{path}: names a segment twice")
    return list(raw)


def _named_items(raw: dict, key: str) -> Iterator[tuple[str, Any]]:
    items = raw.get(key, {})
    if items is None:
        return
    _require_mapping(items, key)
    for name, item in items.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{key}: names must be non-empty strings, got {name!r}")
        if len(name) > MAX_NAME_LENGTH:
            raise ConfigError(f"{key}.{name[:40]}…: name longer than {MAX_NAME_LENGTH} characters")
        yield name, item


def _require_mapping(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a dict, got {type(value).__name__}")


def _reject_unknown_keys(raw: dict, path: str, allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {', '.join(repr(k) for k in sorted(unknown, key=str))}; "
            f"expected {', '.join(sorted(allowed))}"
        )


def _positional_arity(fn: Callable) -> int | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in signature.parameters.values() if p.kind in kinds)


def _check_arity(fn: Callable, path: str, most: int) -> None:
    arity = _positional_arity(fn)
    if arity is not None and not 1 <= arity <= most:
        expected = "(user)" if most == 1 else "(user) or (user, event)"
        raise ConfigError(f"{path}: must be a function of {expected}, takes {arity} arguments")


def call_with_arity(fn: Callable, *args: Any) -> Any:
    """Call `fn` with as many of `args` as it takes: `lambda user:` and `lambda user, event:`."""
    arity = _positional_arity(fn)
    return fn(*args[: arity if arity is not None else len(args)])


def _mentions_name(fn: Callable, name: str) -> bool:
    """True if the function's code (or code nested in it) refers to `name`, e.g. timezone.now."""
    stack = [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        if name in code.co_names or name in code.co_varnames:
            return True
        stack.extend(c for c in code.co_consts if inspect.iscode(c))
    return False


def _literal_send_email_templates(source: str) -> list[str]:
    """Template ids a flow passes to rt.send_email as string literals, found without running it."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "send_email"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(node.args[0].value)
    return found


def source_of(fn: Callable) -> str:
    """The source code of a function, as narrow as can be found: a lambda's own text only."""
    try:
        lines, _ = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return repr(fn)
    source = textwrap.dedent("".join(lines))
    if getattr(fn, "__name__", "") != "<lambda>":
        return source.strip()
    lambdas = _lambda_segments(source)
    if len(lambdas) == 1:
        return lambdas[0]
    # Several lambdas on the same lines: pick the one whose parameters match.
    arg_names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    matching = [
        text for text, args in _lambda_segments(source, with_args=True) if args == arg_names
    ]
    return matching[0] if len(matching) == 1 else source.strip()


def _lambda_segments(source: str, with_args: bool = False) -> list:
    text = source.strip().rstrip(",")
    for candidate in (text, f"({text})", f"{{{text}}}", f"f({text})"):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                segment = ast.get_source_segment(candidate, node) or ""
                if with_args:
                    found.append((segment, tuple(a.arg for a in node.args.args)))
                else:
                    found.append(segment)
        return found
    return []


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# The config a process runs with.

_lock = threading.Lock()
_current: Config | None = None


def get_config() -> Config:
    """The config this process runs with, loaded once from settings.SEGFLOW_CONFIG."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = load_config(_configured_location())
    return _current


def set_config(config: Config | None) -> None:
    """Replace the process's config (after a push, a reload, or in tests); None reloads lazily."""
    global _current
    with _lock:
        _current = config


def _configured_location() -> str:
    from django.conf import settings

    return settings.SEGFLOW_CONFIG
