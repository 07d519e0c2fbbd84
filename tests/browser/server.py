"""A real ``term-llm serve jobs`` process for the browser tests, started and stopped
synchronously (the browser tests are plain ``def`` tests driving sync Playwright)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from termjobs.testing import free_port

TOKEN = "browser-token"
START_TIMEOUT_S = 60.0


@dataclass
class Dashboard:
    """A running server: its address, token and log."""

    url: str
    token: str | None
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ui(self) -> str:
        return f"{self.url}/ui/"

    def api(self) -> httpx.Client:
        """An API client with the token (for seeding and checking what the page did)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_server(folder: Path, *extra: str, token: str | None = TOKEN) -> Iterator[Dashboard]:
    """Start a server on a fresh database in ``folder``; stopped (by its pid) at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "termjobs", "serve", "jobs", "--port", str(port)]
    argv += ["--db", str(folder / "jobs.db"), "--shutdown-grace", "1", *extra]
    argv += ["--token", token] if token else []
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    dashboard = Dashboard(f"http://127.0.0.1:{port}", token, process, log_path)
    try:
        _wait_until_serving(dashboard)
        yield dashboard
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_until_serving(dashboard: Dashboard) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if dashboard.process.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{dashboard.log}")
        try:
            if httpx.get(f"{dashboard.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a condition (the port answers), bounded by the deadline
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT_S} s:\n{dashboard.log}")
