"""The one way delivery reaches the synchronous store: off its event loop.

The `Store` is synchronous (sqlite3, psycopg's sync pool), and a PostgreSQL round trip takes a
millisecond or more: called on the loop, it stalls every worker of the process for that long.
Delivery code on the loop therefore calls the store, and every synchronous helper that reads
or writes it (`DeliveryMemory`, `LearnedFacts`, `DestinationHealth`'s reads, ...), through
`store_call`, which runs it in a thread as Starlette's `run_in_threadpool` does.
`tests/test_architecture.py` fails on a direct call from an `async def` under `delivery/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def store_call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` (store work, synchronous) in a thread; await its result."""
    return await asyncio.to_thread(fn, *args, **kwargs)
