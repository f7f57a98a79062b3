"""The mapping planner: (event, settings, schema, identity) -> operations + explanation.

Pure: no I/O, no clock. Any JSON value as ``event`` gives a :class:`Plan`; only the settings can
make it raise (:class:`MappingConfigError`, when a rule names a selector entry the schema does not
have). :func:`check_settings` finds those problems up front.

The planner lives in the package ``core/planning/`` (one module per message type, one table of
rule handlers); this module is its stable entry point.
"""

from __future__ import annotations

from freshsales_destination.core.planning import Plan, check_settings, plan
from freshsales_destination.core.planning.templates import NOTE_LIMIT

__all__ = ["NOTE_LIMIT", "Plan", "check_settings", "plan"]
