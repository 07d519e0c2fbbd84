"""Input of ``term-llm jobs``: JSON/YAML payloads and the global flag values."""

from __future__ import annotations

import json

import pytest

from termjobs.cli.client import DEFAULT_TIMEOUT_S, check_server, parse_timeout, segment
from termjobs.cli.payload import PayloadError, decode_text, encode_payload, parse_payload

NIGHTLY_YAML = """
# the README's nightly job
name: nightly-report
runner_type: program
runner_config:
  command: sh
  args: ["-c", "echo report"]
trigger_type: cron
trigger_config: {expression: "30 2 * * *", timezone: Europe/Berlin}
retry_policy:
  max_attempts: 3
  initial_delay: 30s
"""


def test_yaml_payload() -> None:
    body = parse_payload(NIGHTLY_YAML)
    assert body["runner_config"] == {"command": "sh", "args": ["-c", "echo report"]}
    assert body["retry_policy"] == {"max_attempts": 3, "initial_delay": "30s"}


def test_json_is_tried_first_and_kept_exactly() -> None:
    assert parse_payload('  {"name": "x", "labels": {"n": 1.5, "on": true}}\n') == {
        "name": "x",
        "labels": {"n": 1.5, "on": True},
    }


def test_yaml_timestamps_stay_text() -> None:
    text = "when:\n  run_at: 2026-03-01T12:00:00Z\n  day: 2026-03-01\n  tagged: !!timestamp 2026-03-02\n"
    assert parse_payload(text)["when"] == {
        "run_at": "2026-03-01T12:00:00Z",
        "day": "2026-03-01",
        "tagged": "2026-03-02",
    }


def test_yaml_keys_become_strings() -> None:
    body = parse_payload("labels:\n  1: one\n  true: yes-key\n  null: nothing\n  2.5: x\n  <<: {m: 1}\n")
    assert body["labels"] == {"1": "one", "true": "yes-key", "null": "nothing", "2.5": "x", "m": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty payload"),
        ("  \n ", "empty payload"),
        ("name: [", "payload is not valid JSON or YAML: expected the node content"),
        ("a: 1\n---\nb: 2\n", "payload is not valid JSON or YAML"),
        ("just words", "payload must be a JSON object or a YAML mapping of job fields, not a string"),
        ("[1, 2]", "not an array"),
        ("42", "not a number"),
        ("null", "not null"),
    ],
)
def test_bad_payloads(text: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message.replace("[", r"\[")):
        parse_payload(text)


def test_json_constants_are_not_json() -> None:
    # NaN is not JSON: the text falls through to YAML, where it is a plain string.
    assert parse_payload('{"timeout_seconds": NaN}') == {"timeout_seconds": "NaN"}


def test_encoding_is_compact_with_sorted_keys() -> None:
    assert encode_payload({"name": "é", "b": [1, {"z": 1, "a": 2}]}) == (
        '{"b":[1,{"a":2,"z":1}],"name":"é"}'.encode()
    )


@pytest.mark.parametrize("text", ["x: .inf", "x: .nan", "x: !!binary aGVsbG8=", "x: !!set {a, b}"])
def test_values_json_cannot_hold_are_refused(text: str) -> None:
    with pytest.raises(PayloadError, match="payload has a value JSON cannot represent"):
        encode_payload(parse_payload(text))


def test_decode_text() -> None:
    assert decode_text("\ufeffname: x".encode(), "f.yaml") == "name: x"
    with pytest.raises(PayloadError, match=r"read f.yaml: not UTF-8 text \(invalid start byte at byte 0\)"):
        decode_text(b"\xff", "f.yaml")


def test_round_trip_of_an_exported_job() -> None:
    exported = {"id": "job_x", "name": "x", "created_at": "2026-03-01T00:00:00Z"}
    assert json.loads(encode_payload(parse_payload(json.dumps(exported)))) == exported


# ------------------------------------------------------------------ flags


@pytest.mark.parametrize(
    ("raw", "server"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        (" https://jobs.example/ui/ ", "https://jobs.example/ui"),
        ("HTTP://[::1]:9000/", "HTTP://[::1]:9000"),
        ("", "http://127.0.0.1:8080"),
    ],
)
def test_server_values(raw: str, server: str) -> None:
    assert check_server(raw) == server


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("127.0.0.1:8080", 'invalid --server "127.0.0.1:8080": must start with http:// or https://'),
        ("ftp://host", 'invalid --server "ftp://host": must start with http:// or https://'),
        ("http://", 'invalid --server "http://": no host name'),
        ("http://host:port", 'invalid --server "http://host:port": '),
    ],
)
def test_bad_server_values(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("/", "/").replace(".", r"\.")):
        check_server(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("15s", 15.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        (" 2h ", 7200.0),
        ("0", DEFAULT_TIMEOUT_S),
        ("0s", DEFAULT_TIMEOUT_S),
        ("-5s", DEFAULT_TIMEOUT_S),
    ],
)
def test_timeout_values(raw: str, seconds: float) -> None:
    assert parse_timeout(raw) == seconds


@pytest.mark.parametrize("raw", ["", "15", "abc", "1d", "5 s"])
def test_bad_timeout_values(raw: str) -> None:
    with pytest.raises(ValueError, match=f'invalid --timeout "{raw}": use a duration such as 15s'):
        parse_timeout(raw)


@pytest.mark.parametrize(
    ("ref", "escaped"),
    [
        ("job_aB-_9", "job_aB-_9"),
        ("my job?#%/", "my%20job%3F%23%25%2F"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a.b", "a.b"),
    ],
)
def test_path_segments_are_escaped(ref: str, escaped: str) -> None:
    assert segment(ref) == escaped
