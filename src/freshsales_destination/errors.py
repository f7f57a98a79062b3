"""The project's exception root and the errors shared by several layers.

Each exception's docstring is its default message; subclasses carry structured fields.
"""

from __future__ import annotations


class FreshsalesDestinationError(Exception):
    """An error in freshsales-destination."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(FreshsalesDestinationError):
    """The configuration is invalid."""


class StoreError(FreshsalesDestinationError):
    """The store could not complete an operation."""


class StoreUnavailable(StoreError):
    """The store cannot commit right now."""


class StoreRefused(StoreError):
    """The store refused the data itself (a value it cannot hold, a constraint): trying the
    same write again fails again. Unlike StoreUnavailable, which passes."""


class StoreSaturated(StoreError):
    """Too many messages are waiting to be committed; try again later."""

    def __init__(self, retry_after: float = 1.0, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
