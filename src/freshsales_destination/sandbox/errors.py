"""Errors that become Freshsales-shaped HTTP answers."""

from __future__ import annotations

from typing import Any

from freshsales_destination.errors import FreshsalesDestinationError


class SandboxError(FreshsalesDestinationError):
    """The sandbox failed."""


class SandboxConfigError(SandboxError):
    """The sandbox configuration or seed file is invalid."""


class ConnectionDropped(SandboxError):
    """The sandbox dropped the connection on purpose (fault injection)."""


class ApiError(SandboxError):
    """An answer in one of Freshsales' error shapes."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def validation_error(*messages: str, status: int = 400) -> ApiError:
    """``{"errors":{"code":N,"message":[...]}}``, the main Freshsales error shape."""
    return ApiError(status, errors_body(status, list(messages)))


def errors_body(status: int, messages: list[str]) -> dict[str, Any]:
    return {"errors": {"code": status, "message": messages}}


def error_code(status: int) -> ApiError:
    """``{"error_code":N}``, the bare shape seen for 404, 429 and some 500s."""
    return ApiError(status, {"error_code": status})


def not_found() -> ApiError:
    return error_code(404)


def unauthorized() -> ApiError:
    return ApiError(401, {"login": "failed", "message": "Incorrect or expired API key"})


def forbidden() -> ApiError:
    return ApiError(403, {"errors": {"message": "Access Denied"}})
