"""The jobs view: triggers in words, live rows (a run starting and finishing shows
without a reload), search, filters and pages; usable at a phone's width."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.helpers import create_job, trigger, wait_for
from tests.browser.server import Dashboard


def test_a_row_follows_its_run_live(page: Page, dashboard: Dashboard, tmp_path: Path) -> None:
    go = tmp_path / "go"
    job = create_job(
        dashboard,
        "watched",
        wait_for(go),
        trigger_type="cron",
        trigger_config={"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
    )
    sign_in(page, dashboard)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="watched", exact=True))
    expect(row).to_contain_text("at 02:30, Europe/Berlin")
    expect(row).to_contain_text("30 2 * * *")
    cells = row.get_by_role("cell")  # Name, Trigger, State, Last run, Next run
    expect(cells.nth(2)).to_have_text(re.compile("enabled"))
    expect(cells.nth(3)).to_have_text("never")
    # Within a day, whatever the time of day the test runs: "in 5 hours", "in 1 hour", "in 12 minutes"
    expect(cells.nth(4)).to_contain_text(re.compile(r"^in \d+ (hour|minute|second)s?"))
    expect(page.get_by_role("status").filter(has_text="live")).to_contain_text("● live")
    page.evaluate("window.notReloaded = true")

    trigger(dashboard, job)  # from elsewhere: the CLI, a schedule
    last_run = row.get_by_role("link", name=re.compile("^last run"))
    expect(last_run).to_have_text(re.compile("running"))
    go.touch()
    expect(last_run).to_have_text(re.compile("succeeded"))
    expect(row).to_contain_text(re.compile(r"took \d"))
    assert page.evaluate("window.notReloaded") is True


def test_search_filters_and_pages(page: Page, dashboard: Dashboard) -> None:
    with dashboard.api() as api:
        for n in range(1, 56):
            body = {
                "name": f"bulk-{n:02d}",
                "runner_type": "program",
                "runner_config": {"command": "true"},
                "trigger_type": "manual",
                "enabled": n % 5 != 0,
                "labels": {"team": "red" if n <= 3 else "blue"},
            }
            assert api.post("/v2/jobs", json=body).status_code == 201
    sign_in(page, dashboard)
    page.get_by_label("Search by name").fill("bulk-")
    summary = page.get_by_text(re.compile(r"^\d+–\d+ of \d+ jobs?$"))
    expect(summary).to_have_text("1–50 of 55 jobs")
    expect(page).to_have_url(re.compile(r"#/jobs\?name=bulk-$"))  # a filtered view can be bookmarked
    page.get_by_role("button", name="Next page").click()
    expect(summary).to_have_text("51–55 of 55 jobs")
    expect(page.get_by_role("link", name=re.compile("^bulk-"))).to_have_count(5)

    page.get_by_label("Enabled").select_option("paused")
    expect(summary).to_have_text("1–11 of 11 jobs")
    expect(page.get_by_role("link", name="bulk-05", exact=True)).to_be_visible()

    page.get_by_label("Enabled").select_option("")
    label = page.get_by_label("Label")
    label.fill("team")
    expect(label).to_have_accessible_description(re.compile("label must look like key=value"))
    label.fill("team=red")
    expect(summary).to_have_text("1–3 of 3 jobs")
    expect(label).not_to_have_attribute("aria-invalid", "true")

    page.reload()  # filters live in the address
    expect(page.get_by_label("Search by name")).to_have_value("bulk-")
    expect(summary).to_have_text("1–3 of 3 jobs")


def test_every_view_fits_a_phone(page: Page, dashboard: Dashboard) -> None:
    job = create_job(
        dashboard,
        "on-the-go",
        "echo from a phone",
        trigger_type="cron",
        trigger_config={"expression": "@daily"},
    )
    run = trigger(dashboard, job)
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, dashboard)
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    for hash_path, heading in (
        ("#/", "Jobs"),
        (f"#/jobs/{job['id']}", "on-the-go"),
        (f"#/runs/{run['id']}", f"Run {run['id']}"),
        (f"#/jobs/{job['id']}/edit", "Edit “on-the-go”"),
    ):
        page.goto(dashboard.ui + hash_path)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        assert page.evaluate(overflow) <= 0, f"{hash_path} scrolls sideways"
    page.goto(dashboard.ui + f"#/jobs/{job['id']}")
    for action in ("Trigger", "Pause", "Delete"):
        expect(page.get_by_role("button", name=action)).to_be_in_viewport()
