"""Naming JSON value types in messages. Dependency-free, so the CLI can use it without
loading the server's validation stack."""

from __future__ import annotations

import json
from typing import Any


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
