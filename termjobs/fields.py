"""What kind of value each field of a value dataclass holds, read off its annotation.

Storage rows and JSON shapes are derived from the value dataclasses; both need to know
which fields hold enums (stored and shown as their values) and which hold timestamps.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
from typing import Any


def enum_type(owner: type, annotation: object) -> type[enum.Enum] | None:
    """The enum class named in a field annotation such as ``"ExitReason | None"``."""
    namespace = vars(sys.modules[owner.__module__])
    for part in str(annotation).split("|"):
        candidate = namespace.get(part.strip())
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def is_timestamp(annotation: object) -> bool:
    """Whether a field annotation names a ``datetime``."""
    return "datetime" in str(annotation)


def fields_of(cls: type) -> list[dataclasses.Field[Any]]:
    """The dataclass fields of ``cls``, in order."""
    return list(dataclasses.fields(cls))
