"""Job definition validation: defaults, messages, PATCH merge rules."""

from __future__ import annotations

from typing import Any

import pytest

from termjobs.errors import InvalidRequest
from termjobs.jobdef import JobDefinition
from termjobs.jobspec import apply_patch, decode_body, definition_for_create, parse_patch
from termjobs.model import ConcurrencyPolicy, MisfirePolicy, RunnerType, TriggerType
from tests.helpers import job_body


def create_error(body: dict[str, Any]) -> str:
    with pytest.raises(InvalidRequest) as info:
        definition_for_create(body)
    return info.value.message


def stored(body: dict[str, Any]) -> JobDefinition:
    return definition_for_create(body)


def definition_for_patch(current: JobDefinition, body: dict[str, Any]) -> JobDefinition:
    return apply_patch(current, parse_patch(body))


def test_defaults() -> None:
    defn = definition_for_create(job_body())
    assert defn.enabled is True
    assert defn.concurrency_policy is ConcurrencyPolicy.FORBID
    assert defn.max_concurrent_runs == 1
    assert defn.timeout_seconds == 300
    assert defn.misfire_policy is MisfirePolicy.SKIP
    assert defn.misfire_grace_seconds == 60
    assert defn.retry_policy is None and defn.labels is None and defn.schedule_timezone is None


def test_explicit_disabled_and_null_enabled() -> None:
    assert definition_for_create(job_body(enabled=False)).enabled is False
    assert definition_for_create(job_body(enabled=None)).enabled is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "name is required"),
        ({"name": "a/b"}, "name must not contain '/'"),
        ({"name": "x" * 201}, "name must be at most 200 characters"),
        ({"runner_type": "docker"}, "runner_type must be one of: llm, program (got 'docker')"),
        ({"trigger_type": "interval"}, "trigger_type must be one of: manual, once, cron (got 'interval')"),
        (
            {"concurrency_policy": "sometimes"},
            "concurrency_policy must be one of: forbid, allow, replace, queue",
        ),
        ({"misfire_policy": "later"}, "misfire_policy must be one of: skip, run"),
        ({"timeout_seconds": -5}, "timeout_seconds must be a whole number from 1 to 2592000 (got -5)"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a whole number from 1"),
        ({"timeout_seconds": "300"}, "timeout_seconds must be a whole number (got string)"),
        ({"timeout_seconds": 1.5}, "timeout_seconds must be a whole number (got number)"),
        ({"max_concurrent_runs": 0}, "max_concurrent_runs must be a whole number from 1 to 1000"),
        ({"enabled": "yes"}, "enabled must be true or false (got string)"),
        ({"name": 7}, "name must be a string (got number)"),
        ({"timout_seconds": 5}, "unknown field 'timout_seconds'"),
        ({"runner_config": {}}, "runner_config.command is required for program jobs"),
        (
            {"runner_config": {"command": "x", "args": "a b"}},
            "runner_config.args must be an array of strings",
        ),
        (
            {"runner_config": {"command": "x", "env": ["NOEQUALS"]}},
            'runner_config.env entries must look like "KEY=VALUE"',
        ),
        ({"runner_config": {"command": "x", "shell": "yes"}}, "runner_config.shell must be true or false"),
        ({"runner_config": "echo hi"}, "runner_config must be a JSON object for program jobs"),
        ({"retry_policy": {"backoff": "sometimes"}}, "retry_policy.backoff must be one of"),
        ({"retry_policy": {"initial_delay": "800000h"}}, "retry_policy.initial_delay must be at most 720h"),
        (
            {"retry_policy": {"max_delay": "1" + "0" * 30 + "h"}},
            "retry_policy.max_delay must be at most 720h",
        ),
        (
            {"runner_config": {"command": "x", "kill_grace_seconds": 10**400}},
            "kill_grace_seconds must be a number",
        ),
        (
            {"trigger_type": "once", "trigger_config": {"run_at": "0001-01-01T00:00:00+01:00"}},
            "run_at must be an RFC 3339",
        ),
        (
            {"trigger_type": "cron", "trigger_config": {"expression": "bad expr"}},
            "trigger_config.expression: cron expression must have 5 fields",
        ),
        (
            {"trigger_type": "cron", "trigger_config": {"expression": "0 0 * * *", "timezone": "Moon/Base"}},
            "unknown time zone 'Moon/Base'",
        ),
        (
            {"trigger_type": "once", "trigger_config": {"run_at": "soon"}},
            "trigger_config.run_at must be an RFC 3339 timestamp",
        ),
        ({"trigger_type": "once"}, "trigger_config.run_at is required for once trigger"),
    ],
)
def test_create_errors_name_the_field_and_the_fix(fields: dict[str, Any], message: str) -> None:
    assert message in create_error(job_body(**fields))


def test_required_fields() -> None:
    assert create_error({"runner_type": "program", "trigger_type": "manual"}) == "name is required"
    assert "runner_type is required" in create_error({"name": "x", "trigger_type": "manual"})
    assert "trigger_type is required" in create_error({"name": "x", "runner_type": "program"})


def test_llm_jobs_need_agent_instructions_and_cwd() -> None:
    body = job_body(runner_type="llm", runner_config={"agent_name": "a", "instructions": "do it"})
    assert create_error(body) == "llm runner_config.cwd is required"
    body["runner_config"]["cwd"] = "/tmp"
    assert definition_for_create(body).runner_type is RunnerType.LLM


def test_read_only_fields_are_accepted_and_ignored() -> None:
    body = job_body(id="job_other", created_at="x", updated_at="y", next_run_at=None, last_run={})
    assert definition_for_create(body).name == "job"


def test_raw_json_fields_keep_unknown_keys_and_order() -> None:
    config = {"command": "x", "zeta": 1, "alpha": {"nested": [1, 2]}}
    stored_config = definition_for_create(job_body(runner_config=config)).runner_config
    assert isinstance(stored_config, dict)
    assert list(stored_config) == [
        "command",
        "zeta",
        "alpha",
    ]


def test_patch_keeps_absent_fields_and_null_restores_defaults() -> None:
    job = stored(job_body(labels={"team": "a"}, timeout_seconds=60, schedule_timezone="Europe/Berlin"))
    renamed = definition_for_patch(job, {"name": "renamed"})
    assert renamed.name == "renamed" and renamed.timeout_seconds == 60 and renamed.enabled is True
    cleared = definition_for_patch(job, {"labels": None, "timeout_seconds": None, "schedule_timezone": None})
    assert cleared.labels is None
    assert cleared.timeout_seconds == 300
    assert cleared.schedule_timezone is None


def test_patch_validates_the_merged_definition() -> None:
    job = stored(job_body())
    with pytest.raises(InvalidRequest, match="trigger_config.expression is required for cron trigger"):
        definition_for_patch(job, {"trigger_type": "cron"})
    with pytest.raises(InvalidRequest, match="name cannot be null"):
        definition_for_patch(job, {"name": None})
    with pytest.raises(InvalidRequest, match="enabled cannot be null"):
        definition_for_patch(job, {"enabled": None})
    with pytest.raises(InvalidRequest, match="misfire_policy must be one of: skip, run"):
        definition_for_patch(job, {"misfire_policy": "later"})


def test_schedule_changed_only_for_schedule_fields() -> None:
    base = stored(job_body())
    assert not base.schedule_differs(definition_for_patch(base, {"name": "other"}))
    assert base.schedule_differs(definition_for_patch(base, {"enabled": False}))
    once = {"trigger_type": "once", "trigger_config": {"run_at": "2026-01-01T00:00:00Z"}}
    assert base.schedule_differs(definition_for_patch(base, once))


def test_a_definition_parses_its_json_parts_once() -> None:
    spec = definition_for_create(
        job_body(retry_policy={"max_attempts": 3}, runner_config={"command": "x", "kill_grace_seconds": 2})
    )
    assert spec.parsed is spec.parsed  # cached on the value
    assert spec.parsed.retry.max_attempts == 3 and spec.parsed.problem is None
    assert getattr(spec.parsed.runner, "kill_grace_seconds", None) == 2.0


def test_a_stored_definition_that_no_longer_parses_is_inert_and_says_why() -> None:
    broken = JobDefinition(
        name="old",
        runner_type=RunnerType.PROGRAM,
        runner_config={"command": "x"},
        trigger_type=TriggerType.CRON,
        trigger_config={"expression": "0 0 * * *", "timezone": "Mars/Olympus"},
    )
    assert broken.parsed.problem is not None and "unknown time zone 'Mars/Olympus'" in broken.parsed.problem
    assert type(broken.parsed.trigger).__name__ == "ManualTrigger"
    with pytest.raises(InvalidRequest, match="Mars/Olympus"):
        definition_for_patch(broken, {"name": "renamed"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is empty"),
        (b"   ", "request body is empty"),
        (b"{", "request body is not valid JSON"),
        (b'{"a":1} {"b":2}', "request body is not valid JSON: Extra data"),
        (b"[1,2]", "request body must be a JSON object, not array"),
        (b"\xff\xfe", "request body must be valid UTF-8 JSON"),
        (b'{"name": "\\ud800"}', "no lone surrogate escapes"),
        (b'{"labels": NaN}', "NaN is not valid JSON"),
        (b'{"labels": -Infinity}', "-Infinity is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "request body is nested too deeply"),
        (b'{"timeout_seconds": ' + b"9" * 5000 + b"}", "a number has 5000 digits"),
        (b'{"labels": {"a": -' + b"1" * 4301 + b"}}", "a number has 4301 digits"),
        (b'{"labels": [1e400]}', "the number 1e400 is out of range"),
        (b'{"labels": -1' + b"0" * 400 + b".5}", "is out of range"),
        (b'{"name": "a\\u0000b"}', "name contains a NUL character"),
        (b'{"labels": {"k": ["x", "\\u0000"]}}', r"labels.k\[1\] contains a NUL character"),
        (b'{"runner_config": {"\\u0000": 1}}', "a key in runner_config contains a NUL character"),
    ],
)
def test_decode_body_errors(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_body(raw)


def test_trigger_types_parse() -> None:
    valid = definition_for_create(
        job_body(trigger_type="once", trigger_config={"run_at": "2026-03-02T00:00:00+01:00"})
    )
    assert valid.trigger_type is TriggerType.ONCE


def test_enabling_or_disabling_keeps_what_was_parsed() -> None:
    spec = definition_for_create(
        {
            "name": "nightly",
            "runner_type": "program",
            "runner_config": {"command": "true"},
            "trigger_type": "cron",
            "trigger_config": {"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
        }
    )
    parsed = spec.parsed
    paused = spec.with_enabled(False)
    assert not paused.enabled and paused.parsed is parsed
    assert paused.with_enabled(True).parsed is parsed and spec.with_enabled(True) is spec
