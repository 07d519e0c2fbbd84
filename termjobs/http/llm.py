"""``/v2/agents`` and ``/v2/sessions/{id}``: what the llm runner knows and keeps."""

from __future__ import annotations

import trio
from quart import Quart, Response

from termjobs import wire
from termjobs.errors import SessionNotFound
from termjobs.http.responses import json_response
from termjobs.model import JSONValue
from termjobs.runners.llm.agents import AgentRegistry, agent_json
from termjobs.services import Services


def register(app: Quart, services: Services) -> None:
    """Add the agent and session routes to ``app``."""
    registry = AgentRegistry(services.settings.llm.agents_dir)

    @app.get("/v2/agents", strict_slashes=False)
    async def list_agents() -> Response:
        # Agent files are read at each listing: edits show without a restart.
        agents = await trio.to_thread.run_sync(registry.all)
        items: list[JSONValue] = [agent_json(agent) for agent in agents]
        return json_response(wire.list_envelope(items, total=len(items), offset=0, limit=len(items)))  # type: ignore[arg-type]

    @app.get("/v2/sessions/<session_id>", strict_slashes=False)
    async def get_session(session_id: str) -> Response:
        transcript = await services.storage.get_session(session_id)
        if transcript is None:
            raise SessionNotFound()
        return json_response(wire.session_json(transcript.session, transcript.messages))
