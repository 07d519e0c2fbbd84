"""Query-string parsing with clear errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from termjobs.errors import InvalidRequest

MAX_QUERY_INT = 10**15 - 1
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def non_negative_int(args: Mapping[str, str], name: str, default: int) -> int:
    """``args[name]`` as a non-negative integer, or ``default`` when absent."""
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequest(f"{name} must be a non-negative integer (got {raw!r})")
    if len(text) > 15:
        raise InvalidRequest(f"{name} is too large (at most {MAX_QUERY_INT})")
    return int(text)


def flag(args: Mapping[str, str], name: str) -> bool | None:
    """``true``/``1``/``yes`` or ``false``/``0``/``no`` (any case); ``None`` when absent."""
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidRequest(f"{name} must be true or false (got {raw!r})")


@dataclass(frozen=True, slots=True)
class Paging:
    """Effective ``limit`` and ``offset`` of a list request."""

    limit: int
    offset: int


def paging(args: Mapping[str, str], *, default: int, maximum: int) -> Paging:
    """``limit`` (0 or absent = default; above the maximum = the maximum) and ``offset``."""
    limit = non_negative_int(args, "limit", 0) or default
    return Paging(limit=min(limit, maximum), offset=non_negative_int(args, "offset", 0))
