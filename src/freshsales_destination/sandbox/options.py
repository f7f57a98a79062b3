"""The sandbox's settings: one frozen value passed to ``build_app``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Product = Literal["suite", "classic"]
ResetFormat = Literal["epoch", "delta", "dmyHis"]
# The body of an injected 5xx (``error_rate``): see sandbox/faults.py.
ErrorBody = Literal["mixed", "errors.message", "error_code"]
TrackingApi = Literal["present", "absent", "html"]
WriteReading = Literal["merge", "replace"]
BulkApi = Literal["present", "absent"]
BulkLinks = Literal["kept", "dropped"]


@dataclass(frozen=True)
class SandboxOptions:
    """Everything that shapes the emulator's behaviour.

    Open questions of the API reference (section 12) map to the fields in the second block; the
    defaults are the behaviour a real user most likely meets (see ``docs/sandbox.md``).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str = "sandbox-api-key"
    app_token: str = "sandbox-app-token"
    product: Product = "suite"
    data_path: Path | None = None
    retry_after: bool = False
    rate_limit_per_hour: int = 1000
    rate_limit_per_minute: int = 400
    strict: bool = True
    seed_path: Path | None = None
    error_rate: float = 0.0
    slow_rate: float = 0.0
    drop_rate: float = 0.0
    slow_seconds: float = 30.0
    fault_seed: int | None = None
    # Injected 5xx (``error_rate``): their statuses, and their body's shape ("errors.message":
    # Freshsales' transient "Something went wrong" in its validation-error shape).
    error_statuses: tuple[int, ...] = (500, 502, 503)
    error_body: ErrorBody = "mixed"

    # Choices where the public record is silent.
    email_case_sensitive: bool = False
    duplicate_email_message: str = "Email has already been taken"
    require_contact_identity: bool = True
    create_status: int = 200
    lead_upsert: bool = False
    convert_keeps_lead: bool = False
    reset_format: ResetFormat = "epoch"
    utc_offset_minutes: int = 0
    max_body_bytes: int = 1_048_576
    max_per_page: int = 100
    custom_fields: WriteReading = "merge"
    """A write's ``custom_field`` is merged into the record's (``merge``) or replaces it whole
    (``replace``: the keys not sent are wiped), the two readings of reference §13.2."""
    account_links: WriteReading = "replace"
    """``sales_accounts`` on a contact write replaces its links (``replace``, reference §4.3 and
    §13.2) or is added to them (``merge``: sent links are added, a sent primary becomes primary)."""
    # Eventually consistent lookups (reference 13.2): a record created is invisible to lookup,
    # filtered search and search for this many seconds; with lookup_delay_upserts, to the
    # match of an upsert too (its uniqueness check still sees it: a duplicate answers 400).
    lookup_delay: float = 0.0
    lookup_delay_upserts: bool = False
    sdks: tuple[str, ...] = ("ruby", "php", "python", "javascript", "freshsales-destination")
    # The tracking API (/track/*, reference §13.3): "absent" answers 404 as for an unknown
    # route, "html" answers 200 with an HTML page (a web app serving the path).
    tracking_api: TrackingApi = "present"
    # Bulk upsert (reference §13.1; sandbox/bulk.py): "absent" answers 404 on the bulk paths (as
    # Classic always does); a job finishes bulk_job_seconds after its POST (sandbox clock); the
    # next bulk_405s POSTs answer 405 (transient refusals seen in production); bulk_links
    # "dropped" ignores account links inside bulk contact items (unattested either way).
    bulk_api: BulkApi = "present"
    bulk_job_seconds: float = 2.0
    bulk_405s: int = 0
    bulk_links: BulkLinks = "kept"
    bulk_max_items: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> SandboxOptions:
        return replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """The options without secrets, for the admin state route."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name in ("api_key", "app_token"):
                continue
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        out["sdks"] = list(self.sdks)
        out["error_statuses"] = list(self.error_statuses)
        return out
