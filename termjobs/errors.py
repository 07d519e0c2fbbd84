"""The termjobs exception tree.

Every error that can reach an API caller is a :class:`TermjobsError`; the HTTP layer
maps each class to one status code (``termjobs.http.errors``)::

    TermjobsError                      500  something unexpected inside the server
    ├── InternalError                  500  a bug: logged with a reference the client sees
    ├── InvalidRequest                 400  the request is malformed or violates a rule
    ├── UnsupportedMediaType           415  the body is not declared as JSON
    ├── Unauthorized                   401  missing or wrong credentials
    ├── NotFound (also LookupError)    404  no such job, run or session
    ├── Conflict                       409  the request clashes with current state
    ├── KeyReused                      422  an Idempotency-Key used with another request
    └── Unavailable                    503  the service is shutting down or overloaded

The message of each instance is the human-readable text sent to the client; it says
what went wrong and, where possible, how to fix it.
"""

from __future__ import annotations


class TermjobsError(Exception):
    """Internal server error."""

    status = 500
    error_type = "internal_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InternalError(TermjobsError):
    """An unexpected failure inside the server; the log has the details under ``ref``."""

    def __init__(self, ref: str, cause: BaseException | None = None) -> None:
        super().__init__(f"internal error (ref {ref}); the server log has the details")
        self.ref = ref
        self.__cause__ = cause


class InvalidRequest(TermjobsError):
    """Invalid request."""

    status = 400
    error_type = "invalid_request_error"


class UnsupportedMediaType(TermjobsError):
    """Content-Type must be application/json."""

    status = 415
    error_type = "invalid_request_error"


class Unauthorized(TermjobsError):
    """invalid authentication credentials"""

    status = 401
    error_type = "invalid_api_key"


class NotFound(TermjobsError, LookupError):
    """Not found."""

    status = 404
    error_type = "invalid_request_error"


class JobNotFound(NotFound):
    """job not found"""


class RunNotFound(NotFound):
    """run not found"""


class SessionNotFound(NotFound):
    """session not found"""


class Conflict(TermjobsError):
    """The request conflicts with the current state."""

    status = 409
    error_type = "invalid_request_error"


class KeyReused(TermjobsError):
    """The Idempotency-Key was used with a different request."""

    status = 422
    error_type = "invalid_request_error"


class AlreadyAnswered(Conflict):
    """A request with this Idempotency-Key was answered before; the answer is replayed."""


class Unavailable(TermjobsError):
    """The service is shutting down; retry against a running server."""

    status = 503
    error_type = "unavailable_error"
