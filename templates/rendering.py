"""Rendering an email (subject, HTML, text part) from a template or a transaction definition."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path

from django.template import Context, Engine

from segflow.attributes import AttributeView, event_values, user_values
from segflow.config import EmailContentDef, call_with_arity


class RenderError(Exception):
    """A template could not be rendered; the message names the template."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@lru_cache(maxsize=8)
def template_engine(base_dir: Path, version: str) -> Engine:
    """A Django template engine that finds email templates beside the config file.

    Its templates are cached, so it is made anew for each version of the config (a push or a
    reload gives a new one), and edited template files are read again.
    """
    return Engine(dirs=[str(base_dir)], autoescape=True, debug=False)


def render_email(
    content: EmailContentDef, base_dir: Path, user, event=None, version: str = ""
) -> RenderedEmail:
    """Render `content` for `user` (and `event`, for transactions)."""
    user_data = user_values(user)
    event_data = event_values(event) if event is not None else None
    callable_args = [AttributeView(user_data)]
    if event_data is not None:
        callable_args.append(AttributeView(event_data))
    try:
        if callable(content.subject):
            subject = str(call_with_arity(content.subject, *callable_args))
        else:
            # A subject is plain text, not HTML: nothing in it is escaped.
            subject = (
                Engine(autoescape=False)
                .from_string(content.subject)
                .render(Context({"user": user_data, "event": event_data}, autoescape=False))
            )
        if callable(content.html):
            html = str(call_with_arity(content.html, *callable_args))
        else:
            template = template_engine(base_dir, version).get_template(str(content.html))
            html = template.render(Context({"user": user_data, "event": event_data}))
    except Exception as exc:
        raise RenderError(f"rendering {content.name!r} failed: {exc!r}") from exc
    # Subjects are one line: a newline in a header would be refused by the mail library.
    subject = " ".join(subject.split())
    return RenderedEmail(subject=subject, html=html, text=html_to_text(html))


def check_template(content: EmailContentDef, base_dir: Path) -> None:
    """Compile the subject and HTML templates, so a syntax error stops a push, not a send."""
    try:
        if isinstance(content.subject, str):
            Engine(autoescape=False).from_string(content.subject)
        if not callable(content.html):
            Engine(dirs=[str(base_dir)], debug=False).get_template(str(content.html))
    except Exception as exc:
        raise RenderError(f"{content.name!r} does not compile: {exc}") from exc


class _TextExtractor(HTMLParser):
    _BLOCKS = {"p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table", "hr"}
    _HIDDEN = {"style", "script", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._href: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self._href.append(dict(attrs).get("href"))
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag):
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        if tag == "a" and self._href:
            href = self._href.pop()
            if href and not href.startswith("#"):
                self.parts.append(f" ({href})")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text part for an HTML email."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
