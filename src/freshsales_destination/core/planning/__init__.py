"""The mapping planner: (event, settings, schema, identity) -> operations + explanation.

Pure: no I/O, no clock. Any JSON value as ``event`` gives a :class:`Plan`; only the settings can
make it raise (:class:`MappingConfigError`, when a rule names a selector entry the schema does not
have). :func:`check_settings` finds those problems up front.

Layout (one module per message type, shared pieces named for what they hold):

- ``dispatch.py``: :func:`plan` and the table of message types;
  ``identify.py``, ``events.py`` (track, page, screen), ``group.py``, ``alias.py``, ``delete.py``.
- ``rules.py``: THE table of rule handlers (rule type -> check and apply), used by planning and
  by ``settings_check.py`` (:func:`check_settings`); ``activity_rule.py`` and ``deal_rule.py``
  hold the larger handlers, ``actions.py`` what a handler is given.
- ``builder.py`` (the plan being built, explanation notes), ``people.py`` (person resolution
  and upsert), ``company_deal.py`` (an identify's company and deal, account links),
  ``fields.py`` (custom field handling), ``templates.py`` (templates and descriptions),
  ``envelope.py`` (message id, time, integrations), ``cleaning.py`` (control characters),
  ``result.py`` (:class:`Plan`).
"""

from __future__ import annotations

from freshsales_destination.core.planning.dispatch import plan
from freshsales_destination.core.planning.result import Plan
from freshsales_destination.core.planning.settings_check import check_settings

__all__ = ["Plan", "check_settings", "plan"]
