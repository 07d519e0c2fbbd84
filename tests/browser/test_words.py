"""How the page words schedules and where it shows a server message, checked in the
browser on the modules the page itself loads."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.browser.server import Dashboard


@pytest.fixture
def loaded(page: Page, dashboard: Dashboard) -> Page:
    page.goto(dashboard.ui)
    page.get_by_role("heading", name="Sign in").wait_for()
    return page


CRON_WORDS = {
    "30 2 * * *": "at 02:30",
    "0 9,17 * * *": "at 09:00 and 17:00",
    "0 9 * * 1-5": "at 09:00 on Monday–Friday",
    "15 6 * * MON,thu": "at 06:15 on Monday, Thursday",
    "0 0 * * 7": "at 00:00 on Sunday",
    "0 4 1,15 * *": "at 04:00 on day 1, 15 of each month",
    "*/5 * * * *": "every 5 minutes",
    "* * * * *": "every minute",
    "7 * * * *": "every hour at :07",
    "0 */6 * * *": "every 6 hours at :00",
    "@daily": "at 00:00",
    "@hourly": "every hour at :00",
    "@weekly": "at 00:00 on Sunday",
    "0 0 1 1 *": None,  # yearly: said as the expression itself
    "0 0 L * *": None,
}


def test_cron_expressions_in_words(loaded: Page) -> None:
    words = loaded.evaluate(
        """async (expressions) => {
            const { cronWords } = await import("./js/format.js");
            return Object.fromEntries(expressions.map((e) => [e, cronWords(e)]));
        }""",
        list(CRON_WORDS),
    )
    assert words == CRON_WORDS


def test_a_trigger_that_has_no_words_shows_its_expression_and_zone(loaded: Page) -> None:
    text = loaded.evaluate(
        """async () => {
            const { triggerWords } = await import("./js/format.js");
            return [
                triggerWords({ trigger_type: "cron", trigger_config: { expression: "0 0 1 1 *" } }),
                triggerWords({ trigger_type: "cron", schedule_timezone: "Asia/Tokyo",
                               trigger_config: { expression: "0 8 * * *", timezone: "UTC" } }),
                triggerWords({ trigger_type: "manual", trigger_config: {} }),
            ];
        }"""
    )
    assert text == ["cron “0 0 1 1 *”, UTC", "at 08:00, Asia/Tokyo", "manual (on demand)"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("trigger_config.expression: minute: value 61 out of bounds (0-59)", "expression"),
        ("trigger_config.expression is required for cron trigger", "expression"),
        ("trigger_config.timezone: unknown time zone 'Mars/Base' (use an IANA name ...)", "zone"),
        ("schedule_timezone: unknown time zone 'Nowhere' (use an IANA name ...)", "zone"),
        ("trigger_config.run_at must be an RFC 3339 timestamp with an offset", "run_at"),
        ("runner_config.command is required for program jobs", "command"),
        ("runner_config.env entries must look like \"KEY=VALUE\" (got 'X')", "env"),
        ('retry_policy.initial_delay must be a duration string such as "30s" or "5m"', "initial_delay"),
        ("retry_policy.max_delay must not be shorter than initial_delay", "max_delay"),
        ("timeout_seconds must be a whole number from 1 to 2592000 (got 0)", "timeout"),
        ("max_concurrent_runs must be a whole number from 1 to 1000 (got 0)", "max_runs"),
        ("a job named 'x' already exists; choose another name", "name"),
        ("name is required", "name"),
        ("unknown field 'nam'; see the job fields in the README", None),
        ("names must be unique", None),
    ],
)
def test_a_server_message_is_shown_beside_the_field_it_names(
    loaded: Page, message: str, field: str | None
) -> None:
    found = loaded.evaluate(
        """async (message) => (await import("./js/form.js")).controlFor(message)""", message
    )
    assert found == field
