"""Fault injection: random 5xx, slow answers and dropped connections, plus scripted answers."""

from __future__ import annotations

import fnmatch
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, get_args

from freshsales_destination.sandbox.errors import validation_error
from freshsales_destination.sandbox.options import ErrorBody, SandboxOptions

FAULT_ERROR_BODIES: tuple[Any, ...] = (
    {"errors": {"code": 500, "message": ["Something went wrong. Please try again later."]}},
    {"error_code": 500},
)

# The shape of an injected 5xx's body (``ErrorBody``): ``errors.message`` is Freshsales'
# transient ``{"errors": {"code": N, "message": ["Something went wrong. Please try again
# later."]}}``, the same shape as its validation errors (reference §13.2); ``error_code`` is
# ``{"error_code": N}``; ``mixed`` picks one of the two at random for each answer.
ERROR_BODIES: tuple[str, ...] = get_args(ErrorBody)


@dataclass
class ScriptedAnswer:
    """One queued answer. ``action`` is ``respond``, ``drop``, ``slow`` or ``pass``."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str = "respond"
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": self.headers,
                "action": self.action, "seconds": self.seconds}


@dataclass
class Script:
    method: str
    path: str
    answers: deque[ScriptedAnswer]

    def matches(self, method: str, route: str) -> bool:
        return (self.method == "*" or self.method == method.upper()) and fnmatch.fnmatchcase(route, self.path)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "remaining": len(self.answers),
                "answers": [a.to_json() for a in self.answers]}


@dataclass
class FaultInjector:
    error_rate: float = 0.0
    slow_rate: float = 0.0
    drop_rate: float = 0.0
    slow_seconds: float = 30.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    seed: int | None = None
    error_body: ErrorBody = "mixed"
    scripts: list[Script] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_options(cls, options: SandboxOptions) -> FaultInjector:
        injector = cls(options.error_rate, options.slow_rate, options.drop_rate, options.slow_seconds,
                       seed=options.fault_seed)
        injector.error_statuses = tuple(options.error_statuses)
        injector.error_body = options.error_body
        injector.rng = random.Random(options.fault_seed)
        return injector

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "slow_rate": self.slow_rate, "drop_rate": self.drop_rate,
                "slow_seconds": self.slow_seconds, "error_statuses": list(self.error_statuses),
                "seed": self.seed, "error_body": self.error_body}

    def configure(self, raw: Any) -> None:
        """Apply ``POST /_sandbox/faults``; unknown keys or bad values answer 400."""
        if not isinstance(raw, dict):
            raise validation_error("Fault settings must be a JSON object")
        for key, value in raw.items():
            if key in ("error_rate", "slow_rate", "drop_rate"):
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise validation_error(f"{key} must be a number between 0 and 1")
                setattr(self, key, float(value))
            elif key == "slow_seconds":
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise validation_error("slow_seconds must be a non-negative number")
                self.slow_seconds = float(value)
            elif key == "error_statuses":
                if not isinstance(value, list) or not value or not all(
                    isinstance(v, int) and 500 <= v <= 599 for v in value
                ):
                    raise validation_error("error_statuses must be a list of 5xx codes")
                self.error_statuses = tuple(value)
            elif key == "error_body":
                if value not in ERROR_BODIES:
                    raise validation_error(f"error_body must be one of {', '.join(ERROR_BODIES)}")
                self.error_body = value
            elif key == "seed":
                if value is not None and not isinstance(value, int):
                    raise validation_error("seed must be an integer or null")
                self.seed = value
                self.rng = random.Random(value)
            else:
                raise validation_error(f"Unknown fault setting {key}")

    def roll(self) -> str | None:
        """Pick a random fault for one request: ``drop``, ``error``, ``slow`` or ``None``."""
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return "drop"
        if self.error_rate and self.rng.random() < self.error_rate:
            return "error"
        if self.slow_rate and self.rng.random() < self.slow_rate:
            return "slow"
        return None

    def error_answer(self) -> tuple[int, Any]:
        status = self.rng.choice(self.error_statuses)
        if self.error_body == "mixed":
            body = self.rng.choice(FAULT_ERROR_BODIES)
        else:
            body = FAULT_ERROR_BODIES[0 if self.error_body == "errors.message" else 1]
        if "errors" in body:
            body = {"errors": {"code": status, "message": body["errors"]["message"]}}
        else:
            body = {"error_code": status}
        return status, body

    # scripts ----------------------------------------------------------------------------------

    def add_script(self, raw: Any) -> Script:
        """Queue answers from ``POST /_sandbox/script``."""
        if not isinstance(raw, dict):
            raise validation_error("Script must be a JSON object")
        method = raw.get("method", "*")
        path = raw.get("path")
        if not isinstance(method, str) or not isinstance(path, str) or not path.startswith("/"):
            raise validation_error("Script needs 'method' and a 'path' pattern starting with /")
        if path.startswith("/crm/sales/"):
            path = path[len("/crm/sales"):]
        responses = raw.get("responses")
        if responses is None and "response" in raw:
            count = raw.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
                raise validation_error("count must be an integer between 1 and 100000")
            responses = [raw["response"]] * count
        if not isinstance(responses, list) or not responses:
            raise validation_error("Script needs 'responses' (a non-empty list) or 'response' and 'count'")
        answers: deque[ScriptedAnswer] = deque()
        for item in responses:
            answers.append(_answer(item))
        script = Script(method.upper(), path, answers)
        self.scripts.append(script)
        return script

    def next_scripted(self, method: str, route: str) -> ScriptedAnswer | None:
        for script in self.scripts:
            if script.matches(method, route) and script.answers:
                answer = script.answers.popleft()
                if not script.answers:
                    self.scripts.remove(script)
                return answer
        return None

    def clear_scripts(self) -> None:
        self.scripts.clear()


def _answer(item: Any) -> ScriptedAnswer:
    if not isinstance(item, dict):
        raise validation_error("Each scripted response must be a JSON object")
    action = item.get("action", "respond")
    if action not in ("respond", "drop", "slow", "pass"):
        raise validation_error("action must be respond, drop, slow or pass")
    status = item.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise validation_error("status must be an HTTP status code")
    headers = item.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                                for k, v in headers.items()):
        raise validation_error("headers must map names to strings")
    seconds = item.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0):
        raise validation_error("seconds must be a non-negative number")
    return ScriptedAnswer(status=status, body=item.get("body"), headers={k: str(v) for k, v in headers.items()},
                          action=action, seconds=seconds)
