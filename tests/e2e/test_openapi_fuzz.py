"""The API against its own OpenAPI document: schemathesis generates requests from
``/openapi.json`` (documented examples, boundary values, random data, and the stateful
sequences the document's links describe) against the real server and checks every answer
(no 5xx, documented status codes, content types and headers, schema-conformant bodies,
rejection of unauthenticated and schema-violating requests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio

from tests.e2e.server import TOKEN, serve

LIMIT_S = 150


async def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server:
            result = await trio.run_process(
                [
                    str(schemathesis),
                    "run",
                    f"{server.url}/openapi.json",
                    "--checks=all",
                    # Accepting every schema-valid body is not our contract: a valid cron
                    # string can still name a time that never comes, a name can be taken.
                    "--exclude-checks=positive_data_acceptance",
                    f"--header=Authorization: Bearer {TOKEN}",
                    "--max-examples=25",
                    "--generation-deterministic",
                    "--workers=1",
                    "--no-color",
                ],
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=tmp_path,
            )
        log = server.log
    report = result.stdout.decode()
    assert result.returncode == 0, report[-6000:]
    summary = report.split("SUMMARY")[-1]
    selected = re.search(r"Selected: (\d+)/(\d+)", summary)
    assert selected and selected[1] == selected[2], summary  # every operation in the document
    assert f"Tested: {selected[2]}" in summary and " failed" not in summary, summary
    assert "Traceback" not in log, log[-3000:]
