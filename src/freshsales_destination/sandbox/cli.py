"""``freshsales-destination sandbox``: serve the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from freshsales_destination.sandbox.errors import SandboxError
from freshsales_destination.sandbox.options import ErrorBody, SandboxOptions


def sandbox_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    api_key: Annotated[str, typer.Option(envvar="SANDBOX_API_KEY", help="The accepted REST API key.")] = (
        "sandbox-api-key"
    ),
    app_token: Annotated[str, typer.Option(envvar="SANDBOX_APP_TOKEN", help="The tracking app token.")] = (
        "sandbox-app-token"
    ),
    product: Annotated[str, typer.Option(help="suite or classic (Classic adds leads).")] = "suite",
    data: Annotated[Path | None, typer.Option(help="Persist records to this SQLite file.")] = None,
    retry_after: Annotated[bool, typer.Option("--retry-after", help="Send Retry-After on 429.")] = False,
    rate_limit_per_hour: Annotated[int, typer.Option(help="Requests per key per sliding hour.")] = 1000,
    rate_limit_per_minute: Annotated[int, typer.Option(help="Requests per key per sliding minute.")] = 400,
    strict: Annotated[bool, typer.Option("--strict/--lenient",
                                         help="Reject unknown or mistyped custom fields (400).")] = True,
    seed: Annotated[Path | None, typer.Option(help="TOML or JSON file of custom fields.")] = None,
    error_rate: Annotated[float, typer.Option(help="Probability of a random 5xx.")] = 0.0,
    slow_rate: Annotated[float, typer.Option(help="Probability of a slow answer.")] = 0.0,
    slow_seconds: Annotated[float, typer.Option(help="Delay of a slow answer.")] = 30.0,
    drop_rate: Annotated[float, typer.Option(help="Probability of a dropped connection.")] = 0.0,
    fault_seed: Annotated[int | None, typer.Option(help="Seed for the fault dice.")] = None,
    error_status: Annotated[list[int] | None, typer.Option(
        help="Status of an injected 5xx (repeat for several; default 500, 502, 503).")] = None,
    error_body: Annotated[str, typer.Option(
        help="Body of an injected 5xx: errors.message (Freshsales' transient 'Something went wrong' "
             "in its validation-error shape), error_code, or mixed (either, at random).")] = "mixed",
    tracking_api: Annotated[str, typer.Option(
        help="present, absent (404 on /track/*) or html (an HTML page on /track/*).")] = "present",
    custom_fields: Annotated[str, typer.Option(
        help="merge or replace: a partial custom_field write keeps or wipes the unsent keys.")] = "merge",
    account_links: Annotated[str, typer.Option(
        help="replace or merge: sales_accounts on a contact write replaces or adds to its links.")] = "replace",
    lookup_delay: Annotated[float, typer.Option(
        help="Seconds a new record stays invisible to lookup and search.")] = 0.0,
    lookup_delay_upserts: Annotated[bool, typer.Option(
        "--lookup-delay-upserts", help="Upserts match by the same delayed view (a duplicate answers 400).")] = False,
    bulk_api: Annotated[str, typer.Option(
        help="present or absent (404 on the bulk_upsert paths; Classic always answers 404).")] = "present",
    bulk_job_seconds: Annotated[float, typer.Option(
        help="Seconds a bulk job takes before its records are written and its status is SUCCESS.")] = 2.0,
    bulk_405s: Annotated[int, typer.Option(
        "--bulk-405s", help="Answer 405 to this many bulk POSTs first (transient refusals).")] = 0,
    bulk_links: Annotated[str, typer.Option(
        help="kept or dropped: account links inside bulk contact items are applied or ignored.")] = "kept",
) -> None:
    """Serve a local emulator of the Freshsales API (in memory unless --data is given)."""
    import uvicorn

    from freshsales_destination.sandbox.app import build_app
    from freshsales_destination.sandbox.testing import quiet_dropped_connections

    if product not in ("suite", "classic"):
        raise typer.BadParameter("product must be suite or classic", param_hint="--product")
    if tracking_api not in ("present", "absent", "html"):
        raise typer.BadParameter("must be present, absent or html", param_hint="--tracking-api")
    for name, value in (("--error-rate", error_rate), ("--slow-rate", slow_rate), ("--drop-rate", drop_rate)):
        if not 0 <= value <= 1:
            raise typer.BadParameter("must be between 0 and 1", param_hint=name)
    if error_body not in get_args(ErrorBody):
        raise typer.BadParameter(f"must be one of {', '.join(get_args(ErrorBody))}", param_hint="--error-body")
    if error_status is not None and not all(500 <= code <= 599 for code in error_status):
        raise typer.BadParameter("must be a 5xx status", param_hint="--error-status")
    for name, reading in (("--custom-fields", custom_fields), ("--account-links", account_links)):
        if reading not in ("merge", "replace"):
            raise typer.BadParameter("must be merge or replace", param_hint=name)
    if lookup_delay < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--lookup-delay")
    if bulk_api not in ("present", "absent"):
        raise typer.BadParameter("must be present or absent", param_hint="--bulk-api")
    if bulk_links not in ("kept", "dropped"):
        raise typer.BadParameter("must be kept or dropped", param_hint="--bulk-links")
    if bulk_job_seconds < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--bulk-job-seconds")
    if bulk_405s < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--bulk-405s")
    options = SandboxOptions(
        host=host, port=port, api_key=api_key, app_token=app_token,
        product="classic" if product == "classic" else "suite", data_path=data, retry_after=retry_after,
        rate_limit_per_hour=rate_limit_per_hour, rate_limit_per_minute=rate_limit_per_minute, strict=strict,
        seed_path=seed, error_rate=error_rate, slow_rate=slow_rate, slow_seconds=slow_seconds,
        drop_rate=drop_rate, fault_seed=fault_seed,
        tracking_api="absent" if tracking_api == "absent" else "html" if tracking_api == "html" else "present",
        custom_fields="replace" if custom_fields == "replace" else "merge",
        account_links="merge" if account_links == "merge" else "replace",
        lookup_delay=lookup_delay, lookup_delay_upserts=lookup_delay_upserts,
        bulk_api="absent" if bulk_api == "absent" else "present", bulk_job_seconds=bulk_job_seconds,
        bulk_405s=bulk_405s, bulk_links="dropped" if bulk_links == "dropped" else "kept",
    )
    options = options.with_changes(error_body=error_body)
    if error_status:
        options = options.with_changes(error_statuses=tuple(error_status))
    try:
        app = build_app(options)
    except SandboxError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    base = f"http://{host}:{port}" + ("/crm/sales" if product == "suite" else "")
    typer.echo(f"Freshsales sandbox ({product}) at {base}  admin: http://{host}:{port}/_sandbox/state")
    quiet_dropped_connections()
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
