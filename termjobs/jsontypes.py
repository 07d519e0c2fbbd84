"""Naming JSON value types in messages. Dependency-free, so the CLI can use it without
loading the server's validation stack."""

from __future__ import annotations

import json
import math
from typing import Any

#: Longest integer literal accepted in JSON input (Python refuses to convert longer
#: ones by default; no field of a job needs anywhere near this many digits).
MAX_INT_DIGITS = 4300


def json_type_name(value: Any) -> str:
    """``object``, ``array``, ``string``, ``number``, ``boolean`` or ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def reject_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and Infinity are not JSON, though
    Python's parser accepts them unless told otherwise."""
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class JSONLimitError(ValueError):
    """A JSON document holds a value termjobs does not accept (the message says which)."""


def bounded_int(text: str) -> int:
    """``parse_int`` for ``json.loads``: integers longer than ``MAX_INT_DIGITS`` digits
    are refused with a clear message instead of Python's conversion error."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"a number has {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def finite_float(text: str) -> float:
    """``parse_float`` for ``json.loads``: a literal too large for a float (``1e400``)
    would become Infinity, which JSON cannot carry back out; refused instead."""
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"the number {text[:40]} is out of range")
    return value


def find_nul(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds a NUL character (in a string or an object key), or ``None``.

    PostgreSQL cannot store NUL in text or JSON, and no program argument can carry it,
    so input holding one is refused up front, on every database alike."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "the body"
        elif isinstance(item, dict):
            for key, inner in item.items():
                if "\x00" in key:
                    return f"a key in {where or 'the body'}"
                stack.append((f"{where}.{key}" if where else key, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in enumerate(item))
    return None
