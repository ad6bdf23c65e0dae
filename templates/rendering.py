"""Rendering an email (subject, HTML, text part) from a template or a transaction definition."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.template import Context, Engine, Template

from segflow.attributes import AttributeView, event_values, user_values
from segflow.config import EmailContentDef, call_with_arity


class RenderError(Exception):
    """A template could not be rendered; the message names the template."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@lru_cache(maxsize=256)
def subject_template(source: str) -> Template:
    """A subject line, compiled once per process rather than once per email."""
    return Engine(autoescape=False).from_string(source)


@lru_cache(maxsize=8)
def template_engine(base_dir: Path, version: str) -> Engine:
    """A Django template engine that finds email templates beside the config file.

    Its templates are cached, so it is made anew for each version of the config (a push or a
    reload gives a new one), and edited template files are read again.
    """
    return Engine(dirs=[str(base_dir)], autoescape=True, debug=False)


def render_email(
    content: EmailContentDef,
    base_dir: Path,
    user,
    event=None,
    version: str = "",
    *,
    unsubscribe_url: str = "",
) -> RenderedEmail:
    """Render `content` for `user` (and `event`, for transactions).

    The template gets `user`, `event` and `unsubscribe_url` (empty for transactional email). The
    HTML's <style> rules are inlined, an unsubscribe footer is added to a campaign email whose
    template has no link of its own, and the text part is made from the HTML.
    """
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
            subject = subject_template(content.subject).render(
                Context({"user": user_data, "event": event_data}, autoescape=False)
            )
        if callable(content.html):
            html = str(call_with_arity(content.html, *callable_args))
        else:
            template = template_engine(base_dir, version).get_template(str(content.html))
            html = template.render(
                Context(
                    {"user": user_data, "event": event_data, "unsubscribe_url": unsubscribe_url}
                )
            )
        html = inline_css(add_unsubscribe_footer(html, unsubscribe_url))
        text = text_part(html, unsubscribe_url)
    except Exception as exc:
        raise RenderError(f"rendering {content.name!r} failed: {exc!r}") from exc
    if unsubscribe_url and unsubscribe_url not in text:
        text = f"{text}\n\nUnsubscribe: {unsubscribe_url}".strip()
    # Subjects are one line: a newline in a header would be refused by the mail library.
    subject = " ".join(subject.split())
    return RenderedEmail(subject=subject, html=html, text=text)


def check_template(content: EmailContentDef, base_dir: Path) -> None:
    """Compile the subject and HTML templates, so a syntax error stops a push, not a send."""
    try:
        if isinstance(content.subject, str):
            Engine(autoescape=False).from_string(content.subject)
        if not callable(content.html):
            Engine(dirs=[str(base_dir)], debug=False).get_template(str(content.html))
    except Exception as exc:
        raise RenderError(f"{content.name!r} does not compile: {exc}") from exc


# css_inline, inscriptis and its lxml are imported on the first email a process renders: they are
# about 10 MB, and the web processes and a worker's parent process never render one.
@lru_cache(maxsize=1)
def _inliner():
    """One inliner for the process: it keeps @media rules in a <style> block (inline styles
    cannot hold them) and never fetches stylesheets from the network."""
    import css_inline

    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@lru_cache(maxsize=1)
def _text_config():
    from inscriptis.model.config import ParserConfig

    return ParserConfig(display_links=True, display_images=False)


def inline_css(html: str) -> str:
    """Move the rules of the HTML's <style> blocks into style attributes, as mail clients need."""
    if "<style" not in html.lower():
        return html  # nothing to inline; leave hand-written fragments as they are
    return _inliner().inline(html)


def add_unsubscribe_footer(html: str, url: str) -> str:
    """Make sure the email carries its unsubscribe link: add a footer if the template did not."""
    if not url or url in html:
        return html
    footer = (
        '<p style="font-size: 12px; color: #64748b;">'
        f'<a href="{url}" style="color: #64748b;">Unsubscribe</a> from these emails.</p>'
    )
    at = html.lower().rfind("</body>")
    return html[:at] + footer + html[at:] if at >= 0 else html + footer


def html_to_text(html: str) -> str:
    """A readable plain-text part for an HTML email (hidden preview text left out)."""
    if not html.strip():
        return ""
    import inscriptis

    text = inscriptis.get_text(html, _text_config())
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# Stands in for an email's own unsubscribe link while its text part is made (see text_part).
_PLACEHOLDER_PREFIX = "https://unsubscribe.invalid/"


def text_part(html: str, unsubscribe_url: str = "") -> str:
    """`html_to_text(html)`, made once for the emails whose HTML differs only in the
    unsubscribe link: a campaign's emails often do, and the conversion is most of the time a
    render takes. The link is swapped for a placeholder of the same length (tables keep their
    widths) and put back in the text."""
    if not unsubscribe_url or unsubscribe_url not in html:
        return _remembered_text(html)
    filler = len(unsubscribe_url) - len(_PLACEHOLDER_PREFIX)
    placeholder = _PLACEHOLDER_PREFIX + "u" * filler
    if filler < 1 or placeholder in html:
        return html_to_text(html)
    shared = _remembered_text(html.replace(unsubscribe_url, placeholder))
    return shared.replace(placeholder, unsubscribe_url)


@lru_cache(maxsize=128)
def _remembered_text(html: str) -> str:
    return html_to_text(html)
