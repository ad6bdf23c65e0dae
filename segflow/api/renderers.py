"""The API's JSON answers, written by orjson: the same bytes as DRF's JSONRenderer, faster.

Where orjson would write something differently (a float under 1e-4, which Python writes as
1e-05 and orjson as 0.00001; an integer beyond 64 bits; `?indent`), DRF's renderer writes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

# orjson's spelling of the floats it writes unlike Python: 0.00001 (Python: 1e-05), 1e-7
# (1e-07). A string that merely contains such text costs a slower render, never a wrong one.
_WRITTEN_UNLIKE_PYTHON = re.compile(rb"0\.0000|e-\d(?!\d)")
_LINE_SEPARATOR, _PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()


_drf_default = JSONEncoder().default


def _as_drf_writes() -> Callable[[Any], Any]:
    """What DRF's encoder makes of a value JSON has no type for, for one answer. A batch's
    answer holds two datetimes an event, most of them the same object (the batch's arrival
    time): each object is written once. (By identity: equal datetimes in other zones differ.)"""
    written: dict[int, str] = {}

    def default(value: Any) -> Any:
        if type(value) is not datetime:
            return _drf_default(value)
        text = written.get(id(value))
        if text is None:
            text = written[id(value)] = _drf_default(value)
        return text

    return default


class FastJSONRenderer(JSONRenderer):
    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context=None
    ) -> bytes:
        if data is None:
            return b""
        if (
            self.ensure_ascii
            or not self.compact
            or not self.strict
            or self.get_indent(accepted_media_type, renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            # Dates and the rest go through DRF's encoder, as DRF writes them (UTC as Z).
            rendered = orjson.dumps(
                data, default=_as_drf_writes(), option=orjson.OPT_PASSTHROUGH_DATETIME
            )
        except (TypeError, orjson.JSONEncodeError):
            return super().render(data, accepted_media_type, renderer_context)
        if _WRITTEN_UNLIKE_PYTHON.search(rendered):
            return super().render(data, accepted_media_type, renderer_context)
        # As DRF does, so that the answer is also valid JavaScript.
        if _LINE_SEPARATOR in rendered or _PARAGRAPH_SEPARATOR in rendered:
            rendered = rendered.replace(_LINE_SEPARATOR, b"\\u2028")
            rendered = rendered.replace(_PARAGRAPH_SEPARATOR, b"\\u2029")
        return rendered
