import json

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .errors import PayloadTooLarge


class StrictJSONParser(JSONParser):
    """JSON bodies only, within the size limit, without NaN, and never a 500 on odd input."""

    def max_bytes(self) -> int:
        return settings.SEGFLOW_MAX_BODY_BYTES

    def too_large(self) -> Exception:
        return PayloadTooLarge()

    def parse(self, stream, media_type=None, parser_context=None):
        limit = self.max_bytes()
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise self.too_large()
        return strict_json(body, (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET))


# A run of 19 digits may be an integer beyond 64 bits, which orjson reads as a float. Found as
# a run of zeros once every digit is one: a regular expression took four times orjson's parse.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
_UTF8 = ("utf-8", "utf8")


def strict_json(body: bytes, encoding: str):
    """The JSON in `body`, or a ParseError that says what is wrong with it."""
    if encoding.lower() in _UTF8 and _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
        # orjson refuses all that the checks below refuse (NaN, infinities, lone surrogates,
        # invalid UTF-8) and reads the rest alike; anything it refuses is read again below, so
        # that the error says the same as ever.
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return _strict_json_slowly(body, encoding)


def _strict_json_slowly(body: bytes, encoding: str):
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ParseError(f"body: not valid {encoding} text") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ParseError("body: JSON nested too deeply") from exc
    except ValueError as exc:
        if "int_max_str_digits" in str(exc) or "digits" in str(exc):
            raise ParseError("body: a number has too many digits") from exc
        raise ParseError(f"body: malformed JSON ({exc})") from exc
    # 1e400 (infinity) and lone surrogates ("\\ud800") parse, but cannot be stored or sent.
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParseError("body: text must be valid Unicode (it has a lone surrogate)") from exc
    except ValueError as exc:
        raise ParseError("body: a number is too large to store") from exc
    return data


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
