"""A local emulator ("sandbox") of the Freshsales REST and tracking APIs.

``build_app(options)`` gives a Starlette app; ``testing.running_sandbox(options)`` serves it on a
real port; ``freshsales-destination sandbox`` runs it from the command line.
"""

from __future__ import annotations

from freshsales_destination.sandbox.app import build_app
from freshsales_destination.sandbox.clock import Clock, FakeClock
from freshsales_destination.sandbox.options import SandboxOptions
from freshsales_destination.sandbox.state import LogEntry, SandboxState

__all__ = ["Clock", "FakeClock", "LogEntry", "SandboxOptions", "SandboxState", "build_app"]
