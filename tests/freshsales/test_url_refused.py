"""A URL the HTTP library refuses at send time is a `DestinationURLRefused`, never a raw error."""

from __future__ import annotations

import asyncio

import pytest

from freshsales_destination.delivery.health import destination_fault
from freshsales_destination.freshsales.client import FreshsalesClient
from freshsales_destination.freshsales.errors import DestinationURLRefused, PermanentError

KEY = "secret-key-0123456789"


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:99999/crm/sales", "http://exa\x01mple.com/crm/sales"],
    ids=["port-out-of-range", "control-character"],
)
def test_a_url_refused_at_send_time_is_a_misconfigured_destination(base_url: str) -> None:
    async def call() -> None:
        async with FreshsalesClient(base_url, KEY, allow_custom_base_url=True, timeout=2) as client:
            await client.get_fields("contacts")

    with pytest.raises(DestinationURLRefused) as caught:
        asyncio.run(call())
    error = caught.value
    assert isinstance(error, PermanentError) and error.status is None
    assert KEY not in str(error)
    fault = destination_fault(error)
    assert fault is not None and fault[0] == "misconfigured"
