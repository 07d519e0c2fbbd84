"""The API's operations, declared once: each route is registered with quart and
described for the OpenAPI document from the same declaration.

A route module declares an :class:`Operation` (method, path, the pydantic models of
its query string and body, its success response, the errors it may answer) and
decorates its handler with :meth:`Api.route`; the handler validates its input with
those same models (:func:`termjobs.http.queries.parse_query`, the job models in
``termjobs.jobspec``). ``termjobs.http.openapi`` turns the list into the document, so
no route can be served without being documented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Quart

from termjobs.http.queries import Query
from termjobs.model import JSONValue

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One documented route."""

    method: str
    #: a quart rule, e.g. ``/v2/jobs/<ref>``
    path: str
    operation_id: str
    summary: str
    #: the success status and the response component it returns
    status: int
    response: str
    description: str = ""
    tag: str = "jobs"
    query: type[Query] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = False
    #: error statuses beyond those of every authenticated route (401, 500, 503)
    errors: tuple[int, ...] = ()
    #: accepts an ``Idempotency-Key`` header
    idempotent: bool = False
    auth: bool = True
    #: path parameter descriptions
    params: dict[str, str] = field(default_factory=dict)
    #: operations the response leads to: operation id -> the path parameter that
    #: takes the response's ``id`` (OpenAPI links, used by stateful testing)
    links: dict[str, str] = field(default_factory=dict)
    request_example: JSONValue = None
    response_example: JSONValue = None


class Api:
    """The operations of one app (see the module docstring)."""

    def __init__(self, app: Quart) -> None:
        self.app = app
        self.operations: list[Operation] = []

    def route(self, operation: Operation) -> Callable[[H], H]:
        """Register ``operation``'s handler with quart and record the operation."""

        def decorate(handler: H) -> H:
            self.app.add_url_rule(
                operation.path,
                operation.operation_id,
                handler,
                methods=[operation.method],
                strict_slashes=False,
            )
            self.operations.append(operation)
            return handler

        return decorate
