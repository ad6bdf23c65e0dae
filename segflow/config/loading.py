"""Loading and validating the segflow config: one Python file that defines everything.

A config file defines a module-level `config` dict (see `SegflowConfig`). `load_config` imports it,
checks every key and returns a `Config` of plain definitions. Errors name the key path and the
problem, for example ``campaigns.onboarding.behavior: must be 'static' or 'dynamic', got 'often'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import time, timedelta
from pathlib import Path
from typing import Any

from ..db import NAMED_PARAMETER
from .definitions import (
    BEHAVIORS,
    MAX_NAME_LENGTH,
    ON_CHANGE,
    PROVIDERS,
    CampaignDef,
    Config,
    ConfigError,
    EmailProviderDef,
    SegmentDef,
    TemplateDef,
    TransactionDef,
    email_provider_settings,
)
from .introspection import (
    literal_send_email_templates,
    mentions_name,
    positional_arity,
    sha256,
    source_of,
)
from .sending_rules import DAY_NAMES, FrequencyCapDef, SendWindowDef, zone_named

# ---------------------------------------------------------------------------------------------
# Loading.


def import_config_module(location: str) -> tuple[Any, Path]:
    """Import the config from a file path or a dotted module name, fresh each time.

    A config file may import the modules beside it (`import helpers`): its folder is on
    `sys.path` while it is imported, and the modules it brought in from there are forgotten
    afterwards, so the next load (another version of the folder) imports them afresh.
    """
    path = Path(location)
    if location.endswith(".py") or path.exists():
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"config: no file at {path}")
        module_name = config_module_name(path)
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"config: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            with _folder_importable(path.parent):
                spec.loader.exec_module(module)
        except ConfigError:
            raise
        except Exception as exc:
            what = f"SyntaxError: {exc.msg}" if isinstance(exc, SyntaxError) else repr(exc)
            raise ConfigError(
                f"config: importing {path} failed: {what}{_where(exc, path.parent)}"
            ) from exc
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


def config_module_name(path: Path) -> str:
    """The name in sys.modules of the config imported from the file at `path`."""
    return f"segflow_user_config_{sha256(str(path))[:12]}"


@contextmanager
def _folder_importable(folder: Path) -> Iterator[None]:
    """`folder` first on sys.path for the import; the new top-level modules it gave, forgotten."""
    before = set(sys.modules)
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added:
            with suppress(ValueError):
                sys.path.remove(str(folder))
        tops = {name.partition(".")[0] for name in before}
        for name in set(sys.modules) - before:
            file = getattr(sys.modules.get(name), "__file__", None) or ""
            if name.partition(".")[0] not in tops and Path(file).is_relative_to(folder):
                sys.modules.pop(name, None)


def _where(exc: BaseException, folder: Path) -> str:
    """ " (file, line N)" of the deepest line in the config's folder that the error came from."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f" ({exc.filename}, line {exc.lineno})"
    where = ""
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if Path(frame.f_code.co_filename).is_relative_to(folder):
            where = f" ({frame.f_code.co_filename}, line {line})"
    return where


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
        raw,
        "config",
        {"email_provider", "templates", "segments", "campaigns", "transactions", *SENDING_KEYS},
    )
    config = Config(
        location=location,
        base_dir=base_dir,
        email_provider=_email_provider(raw.get("email_provider"), "email_provider"),
        **_sending_rules(raw),
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
    provider_settings = {k: v for k, v in settings.items() if k != "name"}
    provider = email_provider_settings(name)
    if provider is not None:
        provider.check_settings(provider_settings, f"{path}.config")
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
    fingerprint = sha256(
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
        names = set(NAMED_PARAMETER.findall(sql))
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
        arity = positional_arity(evaluator)
        if arity not in (1, 2):
            raise ConfigError(
                f"{path}.evaluator: must take (users) or (users, now), takes {arity} arguments"
            )
        time_based = arity == 2 or mentions_name(evaluator, "now")
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
        fingerprint=sha256(
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
    _reject_unknown_keys(
        raw, path, {"segments", "exclude_segments", "behavior", "flow", "send_window", "on_change"}
    )
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
    on_change = raw.get("on_change", "end")
    if on_change not in ON_CHANGE:
        raise ConfigError(
            f"{path}.on_change: must be one of {', '.join(repr(m) for m in ON_CHANGE)}, "
            f"got {on_change!r}"
        )
    flow = raw.get("flow")
    if not inspect.isgeneratorfunction(flow):
        raise ConfigError(
            f"{path}.flow: must be a generator function (a def with `yield rt.send_email(...)` "
            f"or `yield rt.wait(...)` in it), got {flow!r}"
        )
    if positional_arity(flow) != 2:
        raise ConfigError(f"{path}.flow: must take two arguments, (ctx, rt)")
    flow_source = source_of(flow)
    for template in literal_send_email_templates(flow_source):
        if template not in config.templates:
            raise ConfigError(
                f"{path}.flow: sends template {template!r}, which is not in templates "
                f"(known: {', '.join(sorted(config.templates)) or 'none'})"
            )
    flow_fingerprint = sha256(flow_source)
    send_window = (
        _send_window(raw["send_window"], f"{path}.send_window") if "send_window" in raw else None
    )
    parts: list[Any] = [segments, exclude, behavior, flow_fingerprint]
    if send_window is not None:  # (only then, so campaigns without one keep their fingerprint)
        parts.append(send_window.describe())
    fingerprint = sha256(json.dumps(parts))
    return CampaignDef(
        name=name,
        segments=tuple(segments),
        exclude_segments=tuple(exclude),
        behavior=behavior,
        flow=flow,
        source=flow_source,
        fingerprint=fingerprint,
        flow_fingerprint=flow_fingerprint,
        send_window=send_window,
        on_change=on_change,
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


def _check_arity(fn: Callable, path: str, most: int) -> None:
    arity = positional_arity(fn)
    if arity is not None and not 1 <= arity <= most:
        expected = "(user)" if most == 1 else "(user) or (user, event)"
        raise ConfigError(f"{path}: must be a function of {expected}, takes {arity} arguments")


# ---------------------------------------------------------------------------------------------
# When campaign emails may go out: time zones, send windows, the frequency cap.

SENDING_KEYS = ("frequency_cap", "timezone_attribute", "default_timezone")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


def _sending_rules(raw: dict) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if "timezone_attribute" in raw:
        attribute = raw["timezone_attribute"]
        if not isinstance(attribute, str) or not attribute.strip():
            raise ConfigError(
                f"timezone_attribute: must name the user attribute that holds their time zone "
                f"(such as 'timezone'), got {attribute!r}"
            )
        rules["timezone_attribute"] = attribute
    if "default_timezone" in raw:
        default = raw["default_timezone"]
        if not isinstance(default, str) or zone_named(default) is None:
            raise ConfigError(
                f"default_timezone: must be an IANA time zone such as 'UTC' or "
                f"'Europe/Berlin', got {default!r}"
            )
        rules["default_timezone"] = default
    if raw.get("frequency_cap") is not None:
        rules["frequency_cap"] = _frequency_cap(raw["frequency_cap"], "frequency_cap")
    return rules


def _frequency_cap(raw: Any, path: str) -> FrequencyCapDef:
    _require_mapping(raw, path)
    _reject_unknown_keys(raw, path, {"emails", "within"})
    emails, within = raw.get("emails"), raw.get("within")
    if isinstance(emails, bool) or not isinstance(emails, int) or emails < 1:
        raise ConfigError(
            f"{path}.emails: must be a whole number of at least 1 (the most campaign emails a "
            f"user gets within 'within'), got {emails!r}"
        )
    if not isinstance(within, timedelta) or within.total_seconds() < 1:
        raise ConfigError(
            f"{path}.within: must be a timedelta of at least one second, such as "
            f"timedelta(days=7), got {within!r}"
        )
    return FrequencyCapDef(emails=emails, within=within)


def _send_window(raw: Any, path: str) -> SendWindowDef:
    _require_mapping(raw, path)
    _reject_unknown_keys(raw, path, {"start", "end", "days"})
    for key in ("start", "end"):
        if key not in raw:
            raise ConfigError(f"{path}.{key}: required, a time of day such as '09:00'")
    start = _time_of_day(raw["start"], f"{path}.start", end=False)
    end = _time_of_day(raw["end"], f"{path}.end", end=True)
    if start == end:
        raise ConfigError(
            f"{path}: start and end are both {raw['start']}, a window that never opens; leave "
            "send_window out to send at any time"
        )
    days = _days(raw.get("days", "mon-sun"), f"{path}.days")
    return SendWindowDef(start=start, end=end, days=days)


def _time_of_day(value: Any, path: str, *, end: bool) -> int:
    """Minutes after midnight; "24:00" only as an end (the end of the day)."""
    if isinstance(value, time):
        return value.hour * 60 + value.minute
    match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
    if match:
        hours, minutes = int(match[1]), int(match[2])
        if minutes < 60 and (hours < 24 or (end and hours == 24 and minutes == 0)):
            return hours * 60 + minutes
    raise ConfigError(f"{path}: must be a time of day 'HH:MM' (24-hour clock), got {value!r}")


def _days(value: Any, path: str) -> frozenset[int]:
    """'mon-fri', 'sat,sun', 'fri-mon' (a range may wrap around the week), or a list of those."""
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or not parts:
        raise ConfigError(
            f"{path}: must be days such as 'mon-fri' or ['sat', 'sun'], got {value!r}"
        )
    days: set[int] = set()
    for part in parts:
        if not isinstance(part, str):
            raise ConfigError(f"{path}: days are names such as 'mon', got {part!r}")
        first, _, last = part.strip().lower().partition("-")
        for name in (first, last) if last else (first,):
            if name not in DAY_NAMES:
                raise ConfigError(
                    f"{path}: unknown day {name!r}; use {', '.join(DAY_NAMES)}, ranges such as "
                    "'mon-fri', or a list of them"
                )
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)
