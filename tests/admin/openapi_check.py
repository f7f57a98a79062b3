"""Validating real admin answers against the served OpenAPI description's schemas."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from freshsales_destination.admin.openapi import spec


def response_schema(path: str, method: str = "get") -> dict[str, Any]:
    """The 200 answer's schema of `path` (a template such as /admin/v1/messages/{id})."""
    document = spec()
    operation = document["paths"][path][method]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def assert_conforms(body: Any, path: str, method: str = "get") -> None:
    validator = Draft202012Validator(response_schema(path, method))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
