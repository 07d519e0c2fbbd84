"""Which live server owns a job: rendezvous (highest random weight) hashing.

Every server computes the same answer from the same list of live servers, with no
coordination: a job belongs to the server whose hash of ``(job id, server id)`` is the
highest. When a server joins, it takes about ``1/N`` of the jobs, each from the server
that had it; when one leaves, only its jobs move, spread over the others. Pure
functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def weight(job_id: str, worker_id: str) -> int:
    """The job's weight on one server (64 bits of BLAKE2b: stable across processes
    and versions, unlike ``hash()``)."""
    digest = hashlib.blake2b(f"{job_id}\0{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(job_id: str, live: Sequence[str]) -> str | None:
    """The server that should own ``job_id`` among ``live`` (``None`` if none is)."""
    if not live:
        return None
    return max(live, key=lambda worker_id: (weight(job_id, worker_id), worker_id))


def mine(job_ids: Iterable[str], me: str, live: Sequence[str]) -> list[str]:
    """The jobs of ``job_ids`` that ``me`` should own."""
    return [job_id for job_id in job_ids if owner_of(job_id, live) == me]


def moves(job_ids: Iterable[str], me: str, live: Sequence[str]) -> dict[str, str]:
    """Of the jobs ``me`` owns, those another live server should own: job -> server."""
    found: dict[str, str] = {}
    for job_id in job_ids:
        owner = owner_of(job_id, live)
        if owner is not None and owner != me:
            found[job_id] = owner
    return found
