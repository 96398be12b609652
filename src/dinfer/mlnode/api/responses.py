"""JSON response rendered with orjson (FastAPI's ``ORJSONResponse`` is deprecated; this is the same ten lines)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONBytesResponse(Response):
    """``application/json`` body rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
