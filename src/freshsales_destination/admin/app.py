"""The operations routes the service mounts (admin API; the dashboard and /metrics beside it).

One function, so each part adds its routes here in one line and service.py stays unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.routing import BaseRoute

from freshsales_destination.admin.api import AdminApi
from freshsales_destination.admin.dashboard import dashboard_routes
from freshsales_destination.config import Settings
from freshsales_destination.store.base import Store


def operations_routes(
    settings: Settings, store: Store, *, now: Callable[[], float] = time.time
) -> list[BaseRoute]:
    """Every operations route of a process serving the tracking API (roles all and ingest):
    the admin API under /admin/v1 (admin/api.py) and the dashboard under /dashboard
    (admin/dashboard.py)."""
    return [
        *AdminApi(settings, store, now=now).routes(),
        *dashboard_routes(store, settings, now=now),
    ]
