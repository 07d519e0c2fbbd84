"""``/v2/agents`` and ``/v2/sessions/{id}``: what the llm runner knows and keeps."""

from __future__ import annotations

import trio
from quart import Response

from termjobs import wire
from termjobs.errors import SessionNotFound
from termjobs.http.api import Api, Operation
from termjobs.http.responses import json_response
from termjobs.model import JSONObject, JSONValue
from termjobs.runners.llm.agents import BUILTIN_AGENTS, AgentRegistry, agent_json
from termjobs.services import Services

_SESSION_EXAMPLE: JSONValue = {
    "id": "sess_4kP2xQ9mTzLa",
    "job_id": "job_7rTq2mXk9PzA",
    "agent": "developer",
    "provider": "openai",
    "model": "gpt-4.1-mini",
    "turn_count": 1,
    "input_tokens": 812,
    "output_tokens": 64,
    "created_at": "2026-03-01T02:30:00.120000Z",
    "updated_at": "2026-03-01T02:30:04.870000Z",
    "messages": [
        {"id": 1, "run_id": "run_Qk3v9ZbX1a2c", "role": "user", "text": "Summarise yesterday's commits."},
        {"id": 2, "run_id": "run_Qk3v9ZbX1a2c", "role": "assistant", "text": "Three commits landed: ..."},
    ],
}


def register(api: Api, services: Services) -> None:
    """Add the agent and session routes."""
    registry = AgentRegistry(services.settings.llm.agents_dir)

    @api.route(
        Operation(
            method="GET",
            path="/v2/agents",
            operation_id="listAgents",
            summary="List the agents llm jobs can name",
            description="Agent files in the configured agents directory first, then the built-ins.",
            tag="llm",
            status=200,
            response="AgentList",
            response_example=wire.list_envelope(
                [agent_json(BUILTIN_AGENTS["developer"])], total=1, offset=0, limit=1
            ),
        )
    )
    async def list_agents() -> Response:
        # Agent files are read at each listing: edits show without a restart.
        agents = await trio.to_thread.run_sync(registry.all)
        items: list[JSONObject] = [agent_json(agent) for agent in agents]
        return json_response(wire.list_envelope(items, total=len(items), offset=0, limit=len(items)))

    @api.route(
        Operation(
            method="GET",
            path="/v2/sessions/<session_id>",
            operation_id="getSession",
            summary="Get an LLM session with its transcript",
            tag="llm",
            status=200,
            response="Session",
            errors=(404,),
            params={"session_id": "a session id (a run's session_id)"},
            response_example=_SESSION_EXAMPLE,
        )
    )
    async def get_session(session_id: str) -> Response:
        transcript = await services.storage.get_session(session_id)
        if transcript is None:
            raise SessionNotFound()
        return json_response(wire.session_json(transcript.session, transcript.messages))
