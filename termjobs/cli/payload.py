"""Job definitions given to ``create``, ``update`` and ``validate``: JSON or YAML.

The text is tried as JSON first, then as YAML (a job file is usually YAML); the result
must be a mapping, and is sent to the server as compact JSON with sorted keys, because
the server accepts JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any, Final, cast

import yaml

from termjobs.jsontypes import json_type_name, reject_constant

_TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"


class PayloadError(ValueError):
    """A payload that cannot be read or is not a JSON object / YAML mapping."""


class _TextTimestampLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps timestamps as the text that was written, and
    makes every mapping key a string.

    The server parses ``run_at`` itself (RFC 3339, offset required); letting YAML
    turn ``2026-03-01T12:00:00Z`` into a datetime would change its text, and a bare
    ``2026-03-01`` into a date the server rightly refuses with a clear message.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Keys are made strings while the mapping is built: afterwards it is too
        # late, since Python has already merged the keys 1 and true (1 == True).
        self.flatten_mapping(node)  # YAML merge keys (<<)
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            key = _key_text(self.construct_object(key_node, deep=deep))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_TextTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _timestamp_text(loader: _TextTimestampLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


# An explicit ``!!timestamp`` tag also stays text.
_TextTimestampLoader.add_constructor(_TIMESTAMP_TAG, _timestamp_text)


def parse_payload(text: str) -> dict[str, Any]:
    """The mapping ``text`` holds, as JSON or else as YAML (keys made strings)."""
    source = text.strip()
    if not source:
        raise PayloadError("empty payload")
    try:
        value = json.loads(source, parse_constant=reject_constant)
    except ValueError:
        value = _load_yaml(source)
    if not isinstance(value, dict):
        raise PayloadError(
            f"payload must be a JSON object or a YAML mapping of job fields, not {_kind(value)}"
        )
    return value


def encode_payload(value: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys, as sent to the server."""
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # e.g. YAML ``.inf``, ``!!binary`` or ``!!set``, which JSON cannot represent
        raise PayloadError(f"payload has a value JSON cannot represent: {exc}") from None
    return text.encode("utf-8")


def decode_text(raw: bytes, source: str) -> str:
    """``raw`` as UTF-8 text (a byte-order mark is dropped); ``source`` names it in errors."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"read {source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _load_yaml(source: str) -> Any:
    try:
        # yaml.load with a SafeLoader subclass: safe_load plus text timestamps.
        return yaml.load(source, Loader=_TextTimestampLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PayloadError(f"payload is not valid JSON or YAML: {problem}{where}") from None


def _kind(value: Any) -> str:
    name = json_type_name(value)
    return name if name == "null" else ("an " if name[0] in "ao" else "a ") + name


def _key_text(key: Any) -> str:
    """JSON object keys are strings; YAML allows ``1: x`` or ``true: x``."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)  # true, false, null
    return str(key)
