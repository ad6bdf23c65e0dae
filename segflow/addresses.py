"""Email addresses: an email goes to exactly one bare address, normalised.

A user's `email` attribute is whatever the app sent, but the providers (through anymail) read an
address string as a list of recipients: `"a@b.com, c@d.com"`, a header smuggled in after a line
break, or an address group would each reach several people, and a display name (`"CEO
<ceo@corp.test>"`) would hide the address from the suppression list. So an address is parsed
here (by email-validator, on its syntax alone: no DNS) and used only as one bare address, lower
case: that one form is stored on the outbox row, checked against suppressions and sent to.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

EXAMPLE = "jane@example.com"


class NotOneAddress(ValueError):
    """The value is not exactly one bare email address; the message says why, for a person."""


def parse_address(value: object) -> str:
    """The one address `value` holds, normalised: no display name, no list, lower case.

    Surrounding whitespace is ignored. Raises NotOneAddress for anything else: an empty or
    non-string value, several addresses, a display name, a quoted or bracketed part.
    """
    if not isinstance(value, str):
        raise NotOneAddress(f"must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise NotOneAddress("is empty")
    return _parse(text)


@lru_cache(maxsize=4096)
def _parse(text: str) -> str:
    try:
        parsed = validate_email(
            text,
            check_deliverability=False,  # syntax only: no DNS lookups
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            # Addresses under the reserved `.test` domain (RFC 6761) pass, for staging setups;
            # `.invalid`, `.localhost`, `.local` and the like do not.
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise NotOneAddress(str(exc)) from None
    return parsed.normalized.lower()


def normalize_address(value: object) -> str:
    """The normalised address of `value`, or "" when it is not exactly one address."""
    try:
        return parse_address(value)
    except NotOneAddress:
        return ""


def address_problem(value: object, what: str) -> str:
    """Why no email can go to `value` (named `what` for a person), or "" when one can."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    try:
        parse_address(value)
    except NotOneAddress as exc:
        shown = value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "…"
        return (
            f"{what} ({shown!r}) is not one email address: {exc} "
            f"(segflow sends to one bare address, such as {EXAMPLE}: no name, no list)"
        )
    return ""
