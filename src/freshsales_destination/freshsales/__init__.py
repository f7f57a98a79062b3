"""The Freshsales HTTP client, its errors and the rate-limit header parser."""

from __future__ import annotations

from freshsales_destination.freshsales.bulk import BulkFailure, JobStatus
from freshsales_destination.freshsales.client import FreshsalesClient, Reply
from freshsales_destination.freshsales.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    ErrorKind,
    FreshsalesError,
    FreshsalesStatusError,
    InvalidArgument,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermanentError,
    PermissionDenied,
    RequestRejected,
    RequestTimeout,
    RetryableError,
    ServerError,
    Throttled,
    TransportFailure,
    UnexpectedResponse,
)
from freshsales_destination.freshsales.ratelimit_headers import RateLimitInfo

__all__ = [
    "AuthenticationFailed",
    "BulkFailure",
    "ConnectionFailed",
    "ErrorKind",
    "FreshsalesClient",
    "FreshsalesError",
    "FreshsalesStatusError",
    "InvalidArgument",
    "InvalidRequest",
    "JobStatus",
    "MethodNotAllowed",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "RateLimitInfo",
    "Reply",
    "RequestRejected",
    "RequestTimeout",
    "RetryableError",
    "ServerError",
    "Throttled",
    "TransportFailure",
    "UnexpectedResponse",
]
