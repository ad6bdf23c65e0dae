import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .errors import PayloadTooLarge


class StrictJSONParser(JSONParser):
    """JSON bodies only, within the size limit, without NaN, and never a 500 on odd input."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.SEGFLOW_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"body: larger than the limit of {limit} bytes")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"body: not valid {encoding} text") from exc
        try:
            data = json.loads(text, parse_constant=_reject_constant)
            # 1e400 (infinity) and lone surrogates ("\\ud800") parse; they can't be stored or sent.
            json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
            return data
        except RecursionError as exc:
            raise ParseError("body: JSON nested too deeply") from exc
        except ValueError as exc:
            raise ParseError(f"body: malformed JSON ({exc})") from exc


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
