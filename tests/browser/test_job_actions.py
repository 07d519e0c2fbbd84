"""Creating and editing jobs through the form and the editor (server validation errors
beside the field they name), and the job view's actions: Pause/Resume, Delete."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.browser.helpers import create_job, trigger, wait_for
from tests.browser.server import Dashboard


def test_create_a_job_in_the_form_a_wrong_cron_is_refused_beside_its_field(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    page.get_by_role("link", name="New job").first.click()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("nightly-backup")
    page.get_by_label("Command", exact=True).fill("echo")
    page.get_by_label("Arguments").fill("backing up\n--full")
    page.get_by_label("Trigger type").select_option("cron")
    cron = page.get_by_label("Cron expression")
    cron.fill("61 2 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Timeout (seconds)").fill("900")
    page.get_by_label("Attempts").fill("3")
    page.get_by_role("button", name="Save").click()

    message = "trigger_config.expression: minute: value 61 out of bounds (0-59)"
    expect(cron).to_have_accessible_description(re.compile(re.escape(message)))
    expect(cron).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".field", has=cron)).to_contain_text(message)  # beside the field
    expect(cron).to_be_focused()
    with dashboard.api() as api:
        assert api.get("/v2/jobs", params={"name": "nightly-backup"}).json()["total"] == 0

    cron.fill("30 2 * * *")
    fire_times = page.get_by_role("list", name="Next fire times")
    expect(fire_times.get_by_role("listitem")).to_have_count(5)  # computed by the server
    expect(fire_times).to_contain_text("02:30")
    expect(cron).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("heading", name="nightly-backup")).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("at 02:30, Europe/Berlin")
    with dashboard.api() as api:
        job = api.get("/v2/jobs/nightly-backup").json()
    assert job["trigger_config"] == {"expression": "30 2 * * *"}
    assert job["schedule_timezone"] == "Europe/Berlin"
    assert job["runner_config"] == {"command": "echo", "args": ["backing up", "--full"]}
    assert (job["timeout_seconds"], job["retry_policy"]) == (900, {"max_attempts": 3, "backoff": "fixed"})


def test_edit_in_the_form_and_in_yaml(page: Page, dashboard: Dashboard) -> None:
    job = create_job(dashboard, "to-edit", "echo hi", labels={"team": "ops"})
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_role("heading", name="Edit “to-edit”")).to_be_visible()
    expect(page.get_by_label("Labels")).to_have_value("team=ops")
    page.get_by_label("Trigger type").select_option("cron")
    page.get_by_label("Cron expression").fill("*/15 * * * *")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="to-edit")).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("every 15 minutes, UTC")

    page.get_by_role("link", name="Edit").click()
    page.get_by_role("tab", name="JSON / YAML").click()
    page.get_by_role("radio", name="YAML").check()
    editor = page.get_by_label("Definition")
    expect(editor).to_have_value(re.compile(r"^timeout_seconds: 300$", re.MULTILINE))
    editor.fill(editor.input_value().replace("timeout_seconds: 300", "timeout_seconds: 0"))
    page.get_by_role("button", name="Save").click()
    expect(editor).to_have_accessible_description(
        re.compile("timeout_seconds must be a whole number from 1 to 2592000")
    )
    editor.fill(editor.input_value().replace("timeout_seconds: 0", "timeout_seconds: 42"))
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("region", name="Definition")).to_contain_text(re.compile(r"Timeout\s*42 s"))
    with dashboard.api() as api:
        saved = api.get(f"/v2/jobs/{job['id']}").json()
    assert (saved["timeout_seconds"], saved["labels"]) == (42, {"team": "ops"})


def test_pause_and_resume(page: Page, dashboard: Dashboard) -> None:
    job = create_job(
        dashboard, "pausable", "true", trigger_type="cron", trigger_config={"expression": "0 * * * *"}
    )
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_focused()
    definition = page.get_by_role("region", name="Definition")
    expect(definition).to_contain_text("none (paused)")
    page.reload()  # the server's state, not the page's
    expect(page.locator(".lede")).to_contain_text("paused")

    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    expect(page.locator(".lede")).to_contain_text("enabled")
    # Within the hour, whenever it runs: "in 12 minutes", "in 1 minute", "in 40 seconds"
    expect(definition).to_contain_text(re.compile(r"Next run\s*in \d+ (minute|second|hour)s?"))


def test_delete_asks_for_confirmation_naming_the_job(page: Page, dashboard: Dashboard) -> None:
    job = create_job(dashboard, "doomed", "true")
    sign_in(page, dashboard, f"#/jobs/{job['id']}")
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Delete job “doomed”?")
    dialog.get_by_role("button", name="Keep job").click()
    expect(dialog).to_be_hidden()

    page.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # the dialog closes from the keyboard too
    expect(dialog).to_be_hidden()
    with dashboard.api() as api:
        assert api.get(f"/v2/jobs/{job['id']}").status_code == 200

    page.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Deleted job “doomed”.")).to_be_visible()
    expect(page.get_by_role("link", name="doomed")).to_have_count(0)
    with dashboard.api() as api:
        assert api.get(f"/v2/jobs/{job['id']}").status_code == 404


def test_deleting_a_job_with_an_active_run_offers_to_cancel_it(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    job = create_job(dashboard, "busy", f"echo busy; {wait_for(tmp_path / 'never')}")
    run = trigger(dashboard, job)
    sign_in(page, dashboard, f"#/runs/{run['id']}")
    expect(page.get_by_role("log", name="Output")).to_contain_text("busy")
    page.get_by_role("link", name="busy").click()

    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    cancel_active = dialog.get_by_label("Cancel its 1 active run first")
    expect(cancel_active).not_to_be_checked()
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog.get_by_role("alert")).to_contain_text("job has 1 active run(s)")

    cancel_active.check()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    with dashboard.api() as api:
        assert api.get(f"/v2/jobs/{job['id']}").status_code == 404
