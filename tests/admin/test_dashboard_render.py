"""The dashboard's templates rendered from the read model's own types: every step of a
journey is shown as an operator needs it (each Freshsales call with method, route, status,
duration and error; retries; the plan's every trait), and what people sent is escaped."""

from __future__ import annotations

import pytest

from freshsales_destination.admin import views
from freshsales_destination.admin.dashboard import (
    BadInput,
    environment,
    format_age,
    format_time,
    funnel,
    parse_time,
)

T0 = 1_796_515_200.0  # 2026-12-06T00:00:00Z
HOSTILE = '<script>alert("x")</script>'


def summary(**changes: object) -> views.MessageSummary:
    fields: dict[str, object] = dict(
        id=7, source="web", destination="crm", message_id="m-7", type="identify",
        status="dead", reason="Invalid contact status provided.", user_id=HOSTILE,
        anonymous_id=None, received_at=T0, event_at=T0, attempts=1,
        last_error="400 Invalid contact status provided.", finished_at=T0 + 3,
    )
    fields.update(changes)
    return views.MessageSummary(**fields)  # type: ignore[arg-type]


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(
        base="/dashboard", csrf="tok", csrf_field="csrf_token", destinations=["crm"],
        now=T0, **context)


def test_the_journey_shows_calls_retries_the_plan_and_escapes_what_was_sent() -> None:
    plan = {
        "operations": [{"kind": "upsert_contact", "entity": "contact", "api_call": True,
                        "key": {"emails": "ada@example.com"}, "fields": {"first_name": "Ada"}}],
        "explanation": {"status": "planned", "reason": None, "entries": [
            {"source": "traits.firstName", "outcome": "mapped", "target": "first_name",
             "reason": "standard field"},
            {"source": "traits.plan", "outcome": "dropped", "target": None,
             "reason": "no Freshsales field named plan"},
        ]},
    }
    journey = views.Journey(
        message=summary(),
        raw={"userId": HOSTILE}, normalized={"userId": HOSTILE},
        steps=[
            views.JourneyStep(T0, "received", {"source": "web"}),
            views.JourneyStep(T0 + 1, "planned", plan),
            views.JourneyStep(T0 + 2, "call", {"method": "POST", "route": "/api/contacts/upsert",
                                               "status": 500, "duration_ms": 41,
                                               "error": "Something went wrong"}),
            views.JourneyStep(T0 + 2, "retry", {"reason": "500 Something went wrong",
                                                "attempt": 1, "next_at": T0 + 7}),
            views.JourneyStep(None, "elided", {"steps": 12}),
            views.JourneyStep(T0 + 2, "held", {"reason": "the email is being created by another lane",
                                               "next_at": T0 + 3}),
            views.JourneyStep(T0 + 3, "requeued", {"next_at": T0 + 3}),
            views.JourneyStep(T0 + 3, "dead", {"reason": "Invalid contact status provided.",
                                               "next_at": None}),
        ],
    )
    html = render("journey.html", journey=journey, m=journey.message)
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "<code>POST /api/contacts/upsert</code> →" in html
    assert "<strong>500</strong> in 41 ms" in html
    assert "Something went wrong" in html
    assert "attempt 1: 500 Something went wrong; next try 2026-12-06 00:00:07Z" in html
    assert "no Freshsales field named plan" in html and "<code>traits.plan</code>" in html
    assert "<td>upsert_contact</td><td>contact</td>" in html
    assert "&#34;first_name&#34;: &#34;Ada&#34;" in html and "<td>yes</td>" in html
    # A step's empty detail is left out, not printed as null.
    assert "12 steps not kept" in html
    assert ("waiting, no attempt spent: the email is being created by another lane; "
            "next try 2026-12-06 00:00:03Z") in html
    assert "<dd>2026-12-06 00:00:03Z</dd>" in html  # any *_at detail reads as a time
    dead_row = html.split('<tr class="step-dead">')[1].split("</tr>")[0]
    assert "Invalid contact status provided." in dead_row
    assert "next_at" not in dead_row and "null" not in dead_row
    # A dead letter's journey offers its retry, with the CSRF token.
    assert 'name="ids" value="7"' in html and 'name="csrf_token" value="tok"' in html


def test_dead_letter_rows_each_have_their_own_retry_and_drop_forms() -> None:
    items = [summary(id=7), summary(id=9, user_id="bob")]
    html = render("dead_letters.html", items=items, more=None,
                  filter={"destination": "", "reason": "", "since": ""}, done=("retried", 1))
    for seq in (7, 9):
        assert f'form="retry-{seq}"' in html and f'id="retry-{seq}"' in html
        assert f'form="drop-{seq}"' in html and f'id="drop-{seq}"' in html
    assert "Retried 1 dead letter." in html
    assert HOSTILE not in html


def test_the_funnel_reads_stats_and_backlog() -> None:
    stats = views.DestinationStats(
        destination="crm", window="24h", bucket_seconds=3600, buckets=[],
        totals=views.Bucket(start=T0, received=9, filtered=1, discarded=2, delivered=4,
                            retried=3, dead=2),
        latency_p50_seconds=1.0, latency_p95_seconds=2.0,
    )
    overview = views.DestinationOverview(
        name="crm", health={"state": "healthy"}, budget={}, backlog={"pending": 5, "retrying": 1},
        oldest_pending_age_seconds=None, drain_estimate_seconds=None, learned={}, events_via={},
    )
    steps = {name: count for name, count, _ in funnel(stats, overview)}
    assert steps == {"received": 9, "filtered": 1, "discarded": 2, "pending": 5,
                     "retrying": 1, "delivered": 4, "dead": 2}


def test_times_and_durations_read_as_people_write_them() -> None:
    assert format_time(T0) == "2026-12-06 00:00:00Z"
    assert format_time(None) == "–"
    assert format_time("2026-12-06T00:00:00Z") == "2026-12-06 00:00:00Z"  # as status prints
    assert format_time("not a time") == "not a time"
    assert [format_age(s) for s in (3, 600, 9000, 3 * 86400, None)] == [
        "3 s", "10 min", "2.5 h", "3.0 d", "–"]
    # A delivery latency below a second reads in milliseconds, never "0 s".
    assert [format_age(s) for s in (0.011, 0.0004, 0.5, 0.9999, 1.4)] == [
        "11 ms", "0 ms", "500 ms", "1 s", "1 s"]
    assert parse_time("2026-12-06T00:00", "since") == T0
    assert parse_time("2026-12-06T01:00+01:00", "since") == T0
    assert parse_time("", "since") is None
    with pytest.raises(BadInput, match="since: 'yesterday' is not a date and time"):
        parse_time("yesterday", "since")
