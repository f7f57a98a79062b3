"""The error shape of ingest: ``IngestError`` and its JSON ``{code, message}`` body.

On the tracking and webhook paths every answer is exactly 200 with ``{"success": true}`` or an
error in this shape (ingest/app.py writes both itself, with `error_body`): analytics-python
treats any success other than 200 as a failure, and retries forever on an error body without
both ``code`` and ``message``. The Starlette routes (browser.py, the service's health, mounts
and error handlers) answer through `json_response` and `error_response`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class IngestError(Exception):
    """A request ingest refuses, with the HTTP status and a machine-readable code."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_body(error: IngestError) -> bytes:
    return orjson.dumps({"code": error.code, "message": error.message})


def error_response(error: IngestError) -> Response:
    return Response(
        error_body(error), status_code=error.status, headers=error.headers,
        media_type="application/json",
    )
