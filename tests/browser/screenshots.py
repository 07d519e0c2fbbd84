"""The README's screenshots of the dashboard, taken against a real server with a few
jobs and runs: ``python -m tests.browser.screenshots [OUT_DIR]`` (default ``docs/``).

Needs Debian's Chromium (``apt-get install chromium-headless-shell``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from tests.browser.conftest import TIMEOUT_MS, chromium_path, sign_in
from tests.browser.helpers import create_job, trigger, wait_for
from tests.browser.server import Dashboard, run_server

VIEWPORT: ViewportSize = {"width": 1100, "height": 720}
PHONE: ViewportSize = {"width": 390, "height": 760}

REPORT_SCRIPT = (
    "echo 'report for' $(date -u +%F); echo 'rows: 1284'; "
    "echo 'warning: 3 rows without a region' >&2; echo 'wrote /srv/reports/daily.csv'"
)


def seed(dashboard: Dashboard, folder: Path) -> dict[str, Any]:
    """Jobs of every kind, some runs of them, and one run still going."""
    berlin = {"expression": "30 2 * * *", "timezone": "Europe/Berlin"}
    report = create_job(
        dashboard, "nightly-report", REPORT_SCRIPT, trigger_type="cron", trigger_config=berlin
    )
    sync = create_job(
        dashboard,
        "crm-sync",
        "echo 'fetching contacts'; echo 'error: upstream answered 502' >&2; exit 2",
        trigger_type="cron",
        trigger_config={"expression": "*/15 * * * *"},
        retry_policy={"max_attempts": 2, "initial_delay": "100ms"},
        labels={"team": "sales"},
    )
    create_job(
        dashboard,
        "weekly-backup",
        "echo backing up",
        trigger_type="cron",
        trigger_config={"expression": "0 3 * * 0", "timezone": "America/New_York"},
        enabled=False,
    )
    create_job(
        dashboard,
        "migrate-archive",
        "echo migrating",
        trigger_type="once",
        trigger_config={"run_at": "2027-01-04T06:00:00Z"},
    )
    long = create_job(
        dashboard,
        "import-orders",
        f'for i in 1 2 3 4 5 6; do echo "imported batch $i of 40"; done; {wait_for(folder / "never")}',
    )
    runs = [trigger(dashboard, report) for _ in range(3)]
    trigger(dashboard, sync)
    importing = trigger(dashboard, long)
    return {"report": report, "report_run": runs[-1], "importing": importing}


def shoot(page: Page, path: Path, *, full_page: bool = False) -> None:
    page.wait_for_timeout(300)  # let the last frame paint (a screenshot, not a test)
    page.screenshot(path=path, full_page=full_page)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def take(out: Path) -> None:
    executable = chromium_path()
    if executable is None:
        sys.exit("no Chromium: apt-get install chromium-headless-shell")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, run_server(Path(scratch) / "server") as dashboard:
        seeded = seed(dashboard, Path(scratch))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable)
            context = browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Berlin")
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            sign_in(page, dashboard)
            expect(page.get_by_role("link", name="import-orders")).to_be_visible()
            expect(page.get_by_text("running")).to_be_visible()
            shoot(page, out / "dashboard-jobs.png")

            page.goto(f"{dashboard.ui}#/jobs/{seeded['report']['id']}")
            expect(page.get_by_text("3 runs, newest first")).to_be_visible()
            shoot(page, out / "dashboard-job.png", full_page=True)

            page.goto(f"{dashboard.ui}#/runs/{seeded['report_run']['id']}")
            expect(page.get_by_role("log", name="Output")).to_contain_text("wrote /srv/reports")
            page.get_by_role("heading", name="Output").scroll_into_view_if_needed()
            shoot(page, out / "dashboard-run.png")

            page.goto(f"{dashboard.ui}#/jobs/new")
            page.get_by_label("Name", exact=True).fill("db-vacuum")
            page.get_by_label("Command", exact=True).fill("/usr/local/bin/vacuum.sh")
            page.get_by_label("Trigger type").select_option("cron")
            page.get_by_label("Cron expression").fill("0 4 * * 1-5")
            page.get_by_label("Time zone").fill("Europe/Berlin")
            expect(page.get_by_role("list", name="Next fire times").get_by_role("listitem")).to_have_count(5)
            shoot(page, out / "dashboard-edit.png", full_page=True)

            page.set_viewport_size(PHONE)
            page.goto(f"{dashboard.ui}#/runs/{seeded['importing']['id']}")
            expect(page.get_by_role("log", name="Output")).to_contain_text("batch 6")
            shoot(page, out / "dashboard-phone.png")
            browser.close()


if __name__ == "__main__":
    take(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs"))
