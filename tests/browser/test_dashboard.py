"""The dashboard in real headless Chromium, on the real service delivering into the sandbox.

Events are sent through the tracking API: three people delivered (an identify and a track
each), two identifies whose person writes the sandbox refuses with Freshsales' 400 (dead
letters), one track without an event name (discarded). The browser logs in through the form,
reads the Delivery Overview's funnel and checks it against what was sent, finds one person's
event by email and opens its journey, retries a dead letter from the dead-letter page (the
refusal was scripted once, so the cause is gone) and sees it delivered on its journey, and
explains a pasted event in the event tester. A console error (a Content-Security-Policy
violation is one), a failed request or an error answer (other than the wrong token's 401)
fails the test.

Screenshots go to ``tests/artifacts/`` (ignored by git); with ``FSD_DOCS_SCREENSHOTS=1`` also
to ``docs/images/`` (the ones docs/operations.md shows).

Needs Debian's ``chromium`` (``.ci/run`` installs it); skipped, saying so, only when absent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dashboard_stack import (
    ADMIN_TOKEN,
    WAIT_SECONDS,
    DashboardStack,
    dashboard_stack,
    identify,
    track,
)

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"
GOOD_USERS = ("ann", "bob", "cyd")
DEAD = ("dora-1", "dirk-1")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DashboardStack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)")
    with dashboard_stack(tmp_path) as running:
        yield running


def shoot(page: Any, name: str, *, docs: bool = True) -> None:
    """A full-page screenshot in tests/artifacts; also in docs/images when asked and `docs`
    (the pictures docs/operations.md shows)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(target), full_page=True)
    if docs and os.environ.get("FSD_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS_IMAGES / target.name)


def send_everything(stack: DashboardStack) -> None:
    stack.scripted_400(len(DEAD))
    stack.send([identify("dora", "dora-1", title="CTO"), identify("dirk", "dirk-1")])
    stack.wait_status(list(DEAD), "dead")
    good = [m for user in GOOD_USERS
            for m in (identify(user, f"{user}-1", title="Engineer"),
                      track(user, f"{user}-2", "Signed Up", plan="pro"))]
    stack.send([*good, {"type": "track", "userId": "eve", "messageId": "eve-1"}])
    stack.wait_status([m["messageId"] for m in good], "delivered")
    stack.wait_status(["eve-1"], "discarded")


def count(page: Any, step: str) -> int:
    return int(page.locator(f'[data-step="{step}"] .count').first.inner_text())


def test_the_dashboard_in_chromium(stack: DashboardStack) -> None:
    from playwright.sync_api import expect, sync_playwright

    send_everything(stack)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT_SECONDS * 1000)
            page = context.new_page()
            # A refused request shows as a console error too: those are checked by status.
            page.on("console", lambda m: problems.append(f"console: {m.text}")
                    if m.type == "error" and "Failed to load resource" not in m.text else None)
            page.on("response", lambda r: problems.append(f"{r.status}: {r.request.method} {r.url}")
                    if r.status >= 400 and not (r.status == 401 and r.url.endswith("/login"))
                    else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))

            # Log in through the form (the dashboard sends an anonymous visitor there).
            page.goto(f"{stack.url}/dashboard")
            expect(page).to_have_url(f"{stack.url}/dashboard/login?next=%2Fdashboard")
            shoot(page, "login")
            page.get_by_label("Admin token").fill("wrong-token")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_contain_text("not the admin token")
            page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{stack.url}/dashboard")
            expect(page.get_by_role("heading", name="Delivery Overview")).to_be_visible()

            # The funnel counts what was sent: 6 delivered, 2 dead, 1 discarded of 9.
            assert count(page, "received") == 9
            assert count(page, "delivered") == 2 * len(GOOD_USERS)
            assert count(page, "dead") == len(DEAD)
            assert count(page, "discarded") == 1
            assert count(page, "filtered") == 0
            assert count(page, "pending") == 0
            expect(page.locator("svg.chart")).to_have_count(1)
            failures = page.locator("table", has=page.get_by_role("columnheader", name="Samples"))
            expect(failures).to_contain_text("Invalid contact status provided.")
            expect(failures).to_contain_text("track message has no event name")
            shoot(page, "overview")

            # Find bob's track by his email and open its journey.
            page.get_by_label("Find an event by userId, email or messageId").fill("bob@example.com")
            page.get_by_role("button", name="Search").click()
            bob = stack.message("bob-2")
            assert bob is not None
            row = page.get_by_role("row").filter(has_text="bob-2")
            expect(row).to_have_count(1)
            expect(page.get_by_role("row").filter(has_text="ann-")).to_have_count(0)
            shoot(page, "search")
            row.get_by_role("link", name=str(bob.seq)).click()
            expect(page).to_have_url(f"{stack.url}/dashboard/messages/{bob.seq}")
            expect(page.locator("#final-status")).to_have_text("delivered")
            expect(page.get_by_role("heading", name="What happened")).to_be_visible()
            expect(page.locator("main")).to_contain_text("Signed Up")
            shoot(page, "journey", docs=False)

            # Retry dora's dead letter from the dead-letter page: it is delivered.
            page.get_by_role("link", name="Dead letters").click()
            dora = stack.message("dora-1")
            assert dora is not None
            rows = page.get_by_role("row").filter(has=page.get_by_role("checkbox"))
            expect(rows).to_have_count(len(DEAD))
            shoot(page, "dead-letters")
            dora_row = page.get_by_role("row").filter(
                has=page.get_by_role("link", name=str(dora.seq), exact=True))
            dora_row.get_by_role("button", name="Retry").click()
            expect(page.get_by_role("status")).to_have_text("Retried 1 dead letter.")
            stack.wait_status(["dora-1"], "delivered")
            page.goto(f"{stack.url}/dashboard/messages/{dora.seq}")
            expect(page.locator("#final-status")).to_have_text("delivered")
            # Its journey: the refused call, dead, put back by the operator, delivered.
            calls = page.locator("tr.step-call")
            expect(calls.filter(has_text="POST /api/contacts/upsert → 400")).to_have_count(1)
            expect(calls.filter(has_text="Invalid contact status provided.")).to_have_count(1)
            expect(calls.filter(has_text="→ 200")).not_to_have_count(0)
            expect(page.locator("tr.step-dead")).to_have_count(1)
            expect(page.locator("tr.step-delivered")).to_have_count(1)
            shoot(page, "journey-retried")
            page.get_by_role("link", name="Dead letters").click()
            expect(page.get_by_role("row").filter(has=page.get_by_role("checkbox"))).to_have_count(1)

            # The event tester explains a pasted event, trait by trait.
            page.get_by_role("link", name="Event tester").click()
            page.get_by_label("A Segment event (JSON)").fill(
                '{"type": "identify", "userId": "zed", '
                '"traits": {"email": "zed@example.com", "firstName": "Zed", "plan": "pro"}}')
            page.get_by_role("button", name="Explain").click()
            expect(page.get_by_role("heading", name="Result")).to_be_visible()
            expect(page.locator("main")).to_contain_text("traits.plan")
            expect(page.locator("main")).to_contain_text("traits.firstName")
            shoot(page, "tester")

            # Log out: the session is gone.
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_label("Admin token")).to_be_visible()
            page.goto(f"{stack.url}/dashboard/dead-letters")
            expect(page.get_by_label("Admin token")).to_be_visible()
            context.close()
        finally:
            browser.close()
    assert problems == [], problems
    # The retried dead letter really reached the CRM: dora is a contact now, dirk is not.
    contacts = stack.sandbox.state.snapshot()["contacts"]
    emails = [str(c.get("emails") or c.get("email")) for c in contacts]
    assert sum("dora@example.com" in e for e in emails) == 1, emails
    assert not any("dirk@example.com" in e for e in emails), emails
