"""Live-stream fan-out: N websocket subscribers on the firehose while runs produce events.

Prints delivered frames per second (over all subscribers) and the publish-to-receive
latency (an event's ``created_at`` to the moment a subscriber has decoded it).
Usage: python benchmarks/stream_fanout.py [--subscribers 100] [--runs 4] [--lines 150]
       [--interval 0.02] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass, field

import trio
import trio_websocket

from benchmarks._server import Server, percentile, program_job, progress, report, running_server

# One line every `interval` seconds: each line becomes its own output event.
CHATTY = "import time\nfor i in range({lines}):\n    print('line', i)\n    time.sleep({interval})\n"


@dataclass(eq=False)
class Subscriber:
    frames: int = 0
    latencies: list[float] = field(default_factory=list)
    closed: int | None = None


@dataclass
class Gate:
    """Set once every subscriber is connected."""

    expected: int
    connected: int = 0
    all_in: trio.Event = field(default_factory=trio.Event)

    def arrive(self) -> None:
        self.connected += 1
        if self.connected == self.expected:
            self.all_in.set()


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def subscribe(server: Server, sub: Subscriber, gate: Gate) -> None:
    resource = "/v2/events/stream?since_id=0"
    async with trio_websocket.open_websocket("127.0.0.1", server.port, resource, use_ssl=False) as ws:
        gate.arrive()
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                sub.closed = exc.reason.code if exc.reason else None
                return
            received = time.time()
            event = json.loads(message)
            sub.frames += 1
            sub.latencies.append(received - parse_ts(event["created_at"]))


async def main(args: argparse.Namespace) -> None:
    async with (
        running_server("--jobs-workers", str(args.runs)) as server,
        server.client(timeout=60) as client,
    ):
        chatty = CHATTY.format(lines=args.lines, interval=args.interval)
        body = program_job("chatty", sys.executable, "-c", chatty, concurrent=args.runs)
        (await client.post("/v2/jobs", json=body)).raise_for_status()
        subs = [Subscriber() for _ in range(args.subscribers)]
        gate = Gate(args.subscribers)
        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(subscribe, server, sub, gate)
            await gate.all_in.wait()
            progress(f"{args.subscribers} subscribers connected; starting {args.runs} chatty runs")
            start = time.perf_counter()
            run_ids = [(await client.post("/v2/jobs/chatty/trigger")).json()["id"] for _ in range(args.runs)]
            for run_id in run_ids:
                while (await client.get(f"/v2/runs/{run_id}")).json()["status"] not in (
                    "succeeded",
                    "failed",
                ):
                    await trio.sleep(0.2)
            total = 0
            for run_id in run_ids:
                total += (await client.get(f"/v2/runs/{run_id}/events?limit=1")).json()["total"]
            progress(f"runs done: {total} events each subscriber should receive")
            with trio.move_on_after(60):
                while any(s.frames < total and s.closed is None for s in subs):
                    await trio.sleep(0.05)
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    frames = sum(s.frames for s in subs)
    latencies = [lat for s in subs for lat in s.latencies]
    lagged = sum(1 for s in subs if s.closed == 4408)
    report(
        "stream fan-out",
        {
            "subscribers": args.subscribers,
            "runs": args.runs,
            "events per run set": total,
            "frames delivered": frames,
            "seconds": round(elapsed, 2),
            "delivered frames/s": frames / elapsed,
            "latency p50 ms": percentile(latencies, 50) * 1000,
            "latency p99 ms": percentile(latencies, 99) * 1000,
            "latency max ms": max(latencies, default=0.0) * 1000,
            "subscribers closed as lagged": lagged,
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--lines", type=int, default=150)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between printed lines")
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
