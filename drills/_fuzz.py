"""The malformed-input drill's probes: hostile requests built from a seeded generator.

Every family of the drill is a method of :class:`Fuzzer`; the same seed builds the same
probes. Mutations that might be valid only ever name the sacrificial (spare) jobs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drills._common import TOKEN

#: Values that are the wrong type (or out of range) for at least some job field.
POOL: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    10**4000,
    1.5,
    -0.0,
    1e308,
    "",
    " ",
    "x",
    "x" * 300,
    "\u0000",
    "a\u0000b",
    "../../etc/passwd",
    "漢字",
    "\ud7ff",
    "%00",
    "* * * * *",
    "0 0 30 2 *",
    "61 * * * *",
    "@reboot",
    "2026-02-30T00:00:00Z",
    "1s",
    "-5s",
    "99999999h",
    "Not/A_Zone",
    "UTC",
    [],
    {},
    [1, "a"],
    {"a": 1},
    {"\u0000": 1},
    [[[[]]]],
]
FIELDS = [
    "name",
    "enabled",
    "runner_type",
    "runner_config",
    "trigger_type",
    "trigger_config",
    "schedule_timezone",
    "concurrency_policy",
    "max_concurrent_runs",
    "retry_policy",
    "timeout_seconds",
    "misfire_policy",
    "misfire_grace_seconds",
    "labels",
    "id",
    "last_run",
]
NESTED = {
    "runner_config": ["command", "args", "shell", "cwd", "env", "kill_grace_seconds"],
    "trigger_config": ["expression", "timezone", "run_at"],
    "retry_policy": ["max_attempts", "backoff", "initial_delay", "max_delay", "jitter_pct"],
}
#: Fields whose every value in POOL is invalid: safe to PATCH onto a seeded job.
TYPED = ["enabled", "max_concurrent_runs", "timeout_seconds", "misfire_grace_seconds"]


@dataclass(frozen=True, slots=True)
class Probe:
    family: str
    raw: bytes
    half_close: bool = False
    upgrade: bool = False


@dataclass
class Targets:
    seeded: list[str]
    seeded_runs: list[str]
    spare: list[str]
    spare_runs: list[str]


def base_job(rng: random.Random) -> dict[str, Any]:
    return {
        "name": f"fuzz-{rng.randrange(10**9)}",
        "runner_type": "program",
        "runner_config": {"command": "true"},
        "trigger_type": "manual",
    }


def head(method: str, path: str, *, auth: bool = True, extra: str = "", body: bytes | None = None) -> bytes:
    lines = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    lines += f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
    lines += extra
    if body is not None:
        lines += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (lines + "\r\n").encode("latin-1", errors="replace") + (body or b"")


class Fuzzer:
    """Builds probes from a seeded random generator (the same seed, the same probes)."""

    def __init__(self, rng: random.Random, targets: Targets) -> None:
        self.rng = rng
        self.t = targets
        self.families: list[Callable[[], Probe]] = [
            self.random_bytes,
            self.random_head,
            self.truncated_body,
            self.deep_nesting,
            self.huge_string,
            self.nul,
            self.wrong_type,
            self.wrong_type,
            self.wrong_type,
            self.wrong_nested,
            self.seeded_patch,
            self.path_trick,
            self.query_trick,
            self.bad_method,
            self.header_trick,
            self.body_header_trick,
            self.websocket,
        ]

    def probe(self) -> Probe:
        return self.rng.choice(self.families)()

    # ---------------------------------------------------------------- helpers

    def spare(self) -> str:
        return self.rng.choice(self.t.spare)

    def any_job(self) -> str:
        return self.rng.choice(self.t.seeded + self.t.spare)

    def write_route(self) -> tuple[str, str]:
        job, run = self.spare(), self.rng.choice(self.t.spare_runs)
        return self.rng.choice(
            [
                ("POST", "/v2/jobs"),
                ("PATCH", f"/v2/jobs/{job}"),
                ("POST", f"/v2/jobs/{job}/trigger"),
                ("POST", f"/v2/jobs/{job}/pause"),
                ("POST", f"/v2/jobs/{job}/resume"),
                ("DELETE", f"/v2/jobs/{job}"),
                ("POST", f"/v2/runs/{run}/cancel"),
            ]
        )

    def read_route(self) -> str:
        job, run = self.any_job(), self.rng.choice(self.t.seeded_runs + self.t.spare_runs)
        return self.rng.choice(
            [
                "/v2/jobs",
                f"/v2/jobs/{job}",
                "/v2/runs",
                f"/v2/runs/{run}",
                f"/v2/runs/{run}/events",
                "/healthz",
                "/",
                "/v2",
                "/v2/nothing",
            ]
        )

    def body_for(self, value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=self.rng.random() < 0.5).encode("utf-8", "surrogatepass")

    # --------------------------------------------------------------- families

    def random_bytes(self) -> Probe:
        return Probe("random bytes", self.rng.randbytes(self.rng.randrange(1, 3000)), half_close=True)

    def random_head(self) -> Probe:
        junk = self.rng.randbytes(self.rng.randrange(1, 200)).replace(b"\r\n", b"")
        method, path = self.rng.choice([("GET", self.read_route()), self.write_route()])
        raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + junk + b"\r\n\r\n"
        return Probe("random header bytes", raw, half_close=True)

    def truncated_body(self) -> Probe:
        method, path = self.write_route()
        body = self.body_for(base_job(self.rng))
        cut = body[: self.rng.randrange(0, len(body))]
        raw = head(method, path, extra=f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        return Probe("truncated body", raw + cut, half_close=True)

    def deep_nesting(self) -> Probe:
        depth = self.rng.choice([50, 500, 1000, 5000, 100_000, 1_000_000])
        inner = "[" * depth + "]" * depth if self.rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
        field = self.rng.choice(["labels", "runner_config", "trigger_config", "retry_policy", "name"])
        job = base_job(self.rng)
        body = json.dumps(job)[:-1].encode() + f', "{field}": {inner}}}'.encode()
        method, path = self.write_route()
        return Probe("deep nesting", head(method if method != "DELETE" else "PATCH", path, body=body))

    def huge_string(self) -> Probe:
        size = self.rng.choice([10_000, 200_000, 2_000_000, 11 * 1024 * 1024])
        job = base_job(self.rng)
        place = self.rng.choice(["name", "command", "label", "key", "expression"])
        text = self.rng.choice(["a", "é", "\u0000", "\\", '"']) * (size // 2)
        if place == "name":
            job["name"] = text
        elif place == "command":
            job["runner_config"]["command"] = text
        elif place == "label":
            job["labels"] = {"big": text}
        elif place == "key":
            job["labels"] = {text: 1}
        else:
            job["trigger_type"], job["trigger_config"] = "cron", {"expression": text}
        return Probe("huge string", head("POST", "/v2/jobs", body=self.body_for(job)))

    def nul(self) -> Probe:
        where = self.rng.choice(["path", "query", "raw path", "header", "body", "key", "token"])
        if where == "path":
            return Probe("NUL", head("GET", f"/v2/jobs/a%00b{self.rng.choice(['', '/trigger'])}"))
        if where == "query":
            param = self.rng.choice(["name", "job_id", "status", "limit", "id_prefix", "since_id"])
            return Probe("NUL", head("GET", f"{self.rng.choice(['/v2/jobs', '/v2/runs'])}?{param}=x%00"))
        if where == "raw path":
            return Probe("NUL", b"GET /v2/jobs/\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if where == "header":
            return Probe(
                "NUL", head("GET", "/v2/jobs", auth=False, extra=f"Authorization: Bearer {TOKEN}\x00\r\n")
            )
        if where == "token":
            return Probe("NUL", head("GET", "/v2/events/stream?token=%00", extra=_ws_headers()), upgrade=True)
        job = base_job(self.rng)
        field = self.rng.choice(["name", "labels", "runner_config", "schedule_timezone", "trigger_config"])
        job[field] = (
            {"\u0000": "x"}
            if where == "key"
            else ("x\u0000" if field in ("name", "schedule_timezone") else {"k": "v\u0000"})
        )
        method, path = self.write_route()
        return Probe("NUL", head(method if method != "DELETE" else "POST", path, body=self.body_for(job)))

    def wrong_type(self) -> Probe:
        job = base_job(self.rng)
        job[self.rng.choice(FIELDS)] = self.rng.choice(POOL)
        method, path = self.rng.choice([("POST", "/v2/jobs"), ("PATCH", f"/v2/jobs/{self.spare()}")])
        return Probe("wrong type", head(method, path, body=self.body_for(job)))

    def wrong_nested(self) -> Probe:
        job = base_job(self.rng)
        outer = self.rng.choice(list(NESTED))
        value = {key: self.rng.choice(POOL) for key in self.rng.sample(NESTED[outer], 2)}
        if outer == "runner_config":
            value.setdefault("command", "true")
        job[outer] = value
        if outer == "trigger_config":
            job["trigger_type"] = self.rng.choice(["cron", "once"])
        method, path = self.rng.choice([("POST", "/v2/jobs"), ("PATCH", f"/v2/jobs/{self.spare()}")])
        return Probe("wrong nested type", head(method, path, body=self.body_for(job)))

    def seeded_patch(self) -> Probe:
        field = self.rng.choice(TYPED)
        value = self.rng.choice([v for v in POOL if not isinstance(v, int) or isinstance(v, bool)])
        if field == "enabled":
            value = self.rng.choice(["true", 1, None, [], {}])
        if field != "enabled" and value is None:
            value = "7"
        seeded = self.rng.choice(self.t.seeded)
        return Probe(
            "invalid patch of a seeded job",
            head("PATCH", f"/v2/jobs/{seeded}", body=self.body_for({field: value})),
        )

    def path_trick(self) -> Probe:
        job = self.spare()
        path = self.rng.choice(
            [
                "/v2/jobs/..",
                "/v2/jobs/%2e%2e/",
                "//v2//jobs",
                f"/v2/jobs/{job}/trigger/extra",
                "/v2/jobs/%ff%fe",
                "/v2/jobs/" + "a" * 8000,
                "/v2/jobs/" + "a" * 20000,
                "/v2/runs/%20",
                "/v2/jobs/✓",
                "/v2/jobs/%F0%9F%98%80",
                "/v2/jobs/%C0%AF",
                "/v2/jobs/%ED%A0%80",
                "*",
                "http://x/v2/jobs",
                "/v2/jobs#frag",
                "/v2/jobs;p=1",
                f"/v2/jobs/{job}/../{job}",
                "/v2/runs/../jobs",
                "/%",
                "/v2/jobs/%",
                "/v2/jobs/%zz",
                f"/V2/JOBS/{job}",
                "/v2/jobs/\t",
                "/v2/jobs/ ",
                "/v2/runs/run_/events",
            ]
        )
        # Every job a trick names is a spare one, so a mutation that lands is harmless.
        method = self.rng.choice(["GET", "POST", "PATCH", "DELETE"])
        return Probe("path trick", head(method, path))

    def query_trick(self) -> Probe:
        base = self.rng.choice(
            ["/v2/jobs", "/v2/runs", f"/v2/runs/{self.rng.choice(self.t.seeded_runs)}/events"]
        )
        param = self.rng.choice(
            [
                "limit",
                "offset",
                "since_id",
                "status",
                "summary",
                "enabled",
                "trigger_type",
                "name",
                "job_id",
                "id_prefix",
                "label",
                "cancel_active",
            ]
        )
        value = self.rng.choice(
            [
                "-1",
                "1e3",
                "99999999999999999999",
                "9" * 5000,
                "",
                "%",
                "%zz",
                "true",
                "maybe",
                "queued,nope",
                "0x10",
                " 1",
                "１",
                "NaN",
                "[]",
                "a" * 3000,
            ]
        )
        return Probe("query trick", head("GET", f"{base}?{param}={value}&{param}=1"))

    def bad_method(self) -> Probe:
        method = self.rng.choice(
            ["PUT", "FOO", "OPTIONS", "HEAD", "TRACE", "CONNECT", "get", "P0ST", "PATCH"]
        )
        path = self.rng.choice([self.read_route(), self.write_route()[1]])
        if method == "PATCH" and path.startswith("/v2/jobs/job_") and path.count("/") == 3:
            path += "/trigger"  # a real PATCH of a job is not a bad method
        return Probe("bad method", head(method, path), half_close=method == "CONNECT")

    def header_trick(self) -> Probe:
        extra = self.rng.choice(
            [
                "Host: a..b\r\n",
                "Host: .\r\n",
                "Host: [::1\r\n",
                "Host: a:b:c\r\n",
                "Host: \r\n",
                "Host: ..:80\r\n",
                "Host: x\r\nHost: y\r\n",
                "Host: " + "a" * 70 + ".com\r\n",
                "Host: é.com\r\n",
                "Host: xn--zz\r\n",
                "Authorization: Bearer\r\n",
                "Authorization: Basic Zm9vOmJhcg==\r\n",
                "Authorization: " + "x" * 9000 + "\r\n",
                "x-api-key: \xff\r\n",
                "X-Long: " + "y" * 20000 + "\r\n",
                "Bad Header: 1\r\n",
                ": empty\r\n",
                "Transfer-Encoding: gzip\r\n",
                "Expect: 100-continue\r\n",
                "Content-Length: -1\r\n",
                "Content-Length: 1e3\r\n",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "Accept: */*\x7f\r\n",
            ]
        )
        method, path = self.rng.choice([("GET", self.read_route()), self.write_route()])
        raw = (
            f"{method} {path} HTTP/1.1\r\n{'' if 'Host:' in extra else 'Host: x' + chr(13) + chr(10)}{extra}"
        )
        raw += f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        return Probe(
            "header trick", raw.encode("latin-1", errors="replace"), half_close="Content-Length: 5" in extra
        )

    def body_header_trick(self) -> Probe:
        method, path = self.write_route()
        body = self.body_for(base_job(self.rng))
        kind = self.rng.choice(
            [
                "text/plain",
                "application/json; charset=latin-1",
                "multipart/form-data",
                "application/x-www-form-urlencoded",
                "",
                "application/json",
            ]
        )
        if self.rng.random() < 0.5:
            chunks = self.rng.choice(
                [b"zz\r\n", b"5\r\nab\r\n0\r\n\r\n", b"ffffffffffffffff\r\n", b"0\r\n\r\n"]
            )
            raw = head(method, path, extra=f"Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n") + chunks
            return Probe("body header trick", raw, half_close=True)
        raw = head(method, path, extra=f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n") + body
        return Probe("body header trick", raw)

    def websocket(self) -> Probe:
        run = self.rng.choice(self.t.seeded_runs)
        path = self.rng.choice(
            [
                f"/v2/runs/{run}/events/stream",
                "/v2/events/stream",
                "/v2/runs/nope/events/stream",
            ]
        ) + self.rng.choice(
            [
                "",
                "?since_id=-1",
                "?since_id=abc",
                "?since_id=" + "9" * 40,
                "?job_id=nope",
                "?job_id=%00",
                f"?token={TOKEN}",
                "?token=wrong",
                "?job_id=" + "j" * 3000,
            ]
        )
        auth = self.rng.random() < 0.6
        extra = _ws_headers() if self.rng.random() < 0.8 else "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        return Probe("websocket handshake", head("GET", path, auth=auth, extra=extra), upgrade=True)


def _ws_headers() -> str:
    return (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
