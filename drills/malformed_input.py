"""Malformed input: thousands of hostile requests across every route; zero 5xx.

Raw sockets send random bytes, truncated bodies, deep nesting, huge strings, NUL in
every place, wrong types in every job field, path and header tricks, bad methods and
bad websocket handshakes, with and without the token, to a real server (SQLite, and
PostgreSQL with ``--postgres``). Invariants: no response is a 5xx, the server never
crashes or logs an unhandled error, and the seeded jobs are unchanged afterwards (same
definition, same runs). Mutations that might be valid only ever target sacrificial
jobs; the seeded ones get reads and bodies that are invalid by construction.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from drills._common import TERMINAL, Report, all_runs, client, database, main, server
from drills._fuzz import Fuzzer, Probe, Targets, base_job
from termjobs.testing import ServerProcess

FULL_REQUESTS = 10_000
SHORT_REQUESTS = 600
PARALLEL = 8
ANSWER_TIMEOUT_S = 15.0


async def send(port: int, probe: Probe) -> int | None:
    """Send one probe; the response status, or ``None`` if the server closed without one."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return -1
    received = b""
    try:
        with trio.move_on_after(ANSWER_TIMEOUT_S):
            try:
                await stream.send_all(probe.raw)
                if probe.half_close:
                    await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            while chunk := await stream.receive_some(65536):
                received += chunk
                if probe.upgrade and b"\r\n\r\n" in received:
                    break
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
    if not received.startswith(b"HTTP/"):
        return None
    try:
        return int(received.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


async def seed(proc: ServerProcess, rng: random.Random) -> tuple[Targets, dict[str, Any]]:
    """Seeded and spare jobs with a finished run each; the seeded jobs' snapshot."""
    async with client(proc) as api:
        ids: dict[str, list[str]] = {"seeded": [], "seeded_runs": [], "spare": [], "spare_runs": []}
        for kind in ("seeded", "spare"):
            for i in range(6):
                job: dict[str, Any] = {**base_job(rng), "name": f"{kind}-{i}"}
                if i % 3 == 1:
                    job.update(trigger_type="cron", trigger_config={"expression": "0 3 1 1 *"})
                elif i % 3 == 2:
                    job.update(trigger_type="once", trigger_config={"run_at": "2099-01-01T00:00:00Z"})
                created = (await api.post("/v2/jobs", json=job)).json()
                run = (await api.post(f"/v2/jobs/{created['id']}/trigger")).json()
                ids[kind].append(created["id"])
                ids[f"{kind}_runs"].append(run["id"])
        await finished(api, ids["seeded_runs"] + ids["spare_runs"])
        return Targets(**ids), await snapshot(api, ids["seeded"])


async def finished(api: Any, run_ids: list[str]) -> None:
    """Until every run in ``run_ids`` has ended (bounded: a busy machine is slower)."""
    with trio.fail_after(60):
        for run_id in run_ids:
            while (await api.get(f"/v2/runs/{run_id}")).json()["status"] not in TERMINAL:
                await trio.sleep(0.05)


async def snapshot(api: Any, job_ids: list[str]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for job_id in job_ids:
        job = (await api.get(f"/v2/jobs/{job_id}")).json()
        job.pop("last_run", None)
        runs = await all_runs(api, job_id=job_id)
        state[job_id] = {"job": job, "runs": sorted((r["id"], r["status"]) for r in runs)}
    return state


async def fuzz_one(kind: str, args: Any, workdir: Path) -> Report:
    report = Report(f"malformed input ({kind})")
    count = SHORT_REQUESTS if args.short else FULL_REQUESTS
    rng = random.Random(15)
    with database(kind, workdir, args.postgres) as db:
        async with server(db, "--read-timeout", "2", "--keep-alive-timeout", "5") as proc:
            targets, before = await seed(proc, rng)
            fuzzer = Fuzzer(rng, targets)
            probes = [fuzzer.probe() for _ in range(count)]
            statuses: Counter[str] = Counter()
            five: list[str] = []
            queue_send, queue_receive = trio.open_memory_channel[Probe](0)

            async def worker() -> None:
                async for probe in queue_receive:
                    status = await send(proc.port, probe)
                    statuses[str(status) if status is not None else "no answer"] += 1
                    if status is not None and (status >= 500 or status < 0):
                        five.append(f"{status} {probe.family}: {probe.raw[:160]!r}")

            async with trio.open_nursery() as nursery:
                for _ in range(PARALLEL):
                    nursery.start_soon(worker)
                async with queue_send:
                    for probe in probes:
                        await queue_send.send(probe)
            queue_receive.close()
            alive = proc.process.returncode is None
            async with client(proc) as api:
                after = await snapshot(api, targets.seeded) if alive else {}
                healthy = alive and (await api.get("/healthz")).status_code == 200
            log = proc.log
    report.figure("requests", count)
    report.figure("families", len({p.family for p in probes}))
    report.figure("answers by status", dict(sorted(statuses.items())))
    report.expect_zero("5xx answers", len(five))
    for line in five[:10]:
        report.violations.append(line)
    report.expect(alive and healthy, "the server did not survive")
    report.expect_zero("unhandled errors logged", log.count("unhandled error") + log.count("Error in ASGI"))
    report.expect_zero("seeded jobs changed", sum(1 for k in before if before[k] != after.get(k)))
    return report


async def run(args: Any) -> list[Report]:
    reports: list[Report] = []
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="termjobs-drill-") as tmp:
        for kind in kinds:
            reports.append(await fuzz_one(kind, args, Path(tmp) / kind))
    return reports


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
