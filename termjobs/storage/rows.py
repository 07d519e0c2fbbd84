"""Rows from values and values from rows, derived from the value dataclasses.

Each column has the name of a field (a nested dataclass such as ``Run.output`` or
``Job.spec`` is flattened into its own fields' columns), so the mapping is read off
the dataclass and the table. Only conversions that differ from "the same value" are
spelled out: enums (found from the field annotations) are stored as their values, and
the columns named as JSON hold compact JSON text.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from termjobs.fields import enum_type
from termjobs.jobdef import Job, JobDefinition
from termjobs.model import PAYLOAD_FIELDS, JSONValue, Run, RunEvent, RunOutput, Session, SessionMessage
from termjobs.storage.tables import jobs, llm_session_messages, llm_sessions, run_events, runs
from termjobs.wire import compact

T = TypeVar("T")
Convert = Callable[[Any], Any]


def _load_json(text: str | None) -> JSONValue:
    return None if text is None else json.loads(text)


@dataclasses.dataclass(frozen=True, slots=True)
class _Column:
    name: str
    to_db: Convert | None
    from_db: Convert | None


def _columns(cls: type, table: sa.Table, json_columns: Collection[str]) -> list[_Column]:
    found: list[_Column] = []
    for item in dataclasses.fields(cls):
        kind = enum_type(cls, item.type)
        if item.name in json_columns:
            nullable = bool(table.c[item.name].nullable)

            def to_db(value: JSONValue, nullable: bool = nullable) -> str | None:
                return None if value is None and nullable else compact(value)

            found.append(_Column(item.name, to_db, _load_json))
        elif kind is not None:
            found.append(_Column(item.name, _enum_value, _enum_loader(kind)))
        else:
            found.append(_Column(item.name, None, None))
    return found


def _enum_value(value: enum.Enum | None) -> object:
    return None if value is None else value.value


def _enum_loader(kind: type[enum.Enum]) -> Convert:
    def load(value: object) -> enum.Enum | None:
        return None if value is None else kind(value)

    return load


class RowMapper(Generic[T]):
    """Maps one value type to one table (see the module docstring).

    ``nested`` names fields whose dataclass value is flattened into columns; ``omit``
    names columns a query may leave out (their fields take their defaults).
    """

    def __init__(
        self,
        cls: type[T],
        table: sa.Table,
        *,
        nested: Mapping[str, type] | None = None,
        json_columns: Collection[str] = (),
        omit: Collection[str] = (),
    ) -> None:
        self._cls = cls
        nested = nested or {}
        self._own = [c for c in _columns(cls, table, json_columns) if c.name not in nested]
        self._nested = [(name, kind, _columns(kind, table, json_columns)) for name, kind in nested.items()]
        # What a query selects and reads back (``omit`` left out: those fields default).
        self._read_own = [c for c in self._own if c.name not in omit]
        self._read_nested = [
            (name, kind, [c for c in columns if c.name not in omit]) for name, kind, columns in self._nested
        ]
        names = [c.name for c in self._read_own] + [c.name for _, _, cs in self._read_nested for c in cs]
        self.columns: list[sa.Column[Any]] = [table.c[name] for name in names]
        self.load: Callable[[sa.RowMapping], T] = self._compile_loader()
        self._tuple_loaders: dict[str, Callable[[Sequence[Any]], T]] = {}

    def values(self, obj: T) -> dict[str, Any]:
        """The row of ``obj``, by column name."""
        row = {c.name: _out(getattr(obj, c.name), c) for c in self._own}
        for name, _, columns in self._nested:
            part = getattr(obj, name)
            row.update((c.name, _out(getattr(part, c.name), c)) for c in columns)
        return row

    def tuple_loader(self, dialect: Dialect) -> Callable[[Sequence[Any]], T]:
        """``load(row)`` for a plain DB-API row: the values of :attr:`columns`, in
        that order, as the driver of ``dialect`` returns them (each column type's
        result conversion is applied here). For the few reads that skip SQLAlchemy's
        execution (see ``storage.sql.points``)."""
        loader = self._tuple_loaders.get(dialect.name)
        if loader is None:
            processors = [
                column.type.dialect_impl(dialect).result_processor(dialect, None) for column in self.columns
            ]
            loader = self._compile_loader(processors)
            self._tuple_loaders[dialect.name] = loader
        return loader

    def _compile_loader(self, processors: Sequence[Convert | None] | None = None) -> Callable[[Any], T]:
        """``load(row)``: the value stored in ``row``, which is a SQLAlchemy row
        mapping holding at least :attr:`columns` or, given the driver's ``processors``
        (one per column), a plain tuple of :attr:`columns`' raw values.

        Generated once per mapper, as dataclasses generate ``__init__``: the plain
        loop over columns cost 40% more per row, and list endpoints read thousands of
        rows per second."""
        namespace: dict[str, Any] = {"cls": self._cls}
        position = iter(range(len(self.columns)))

        def arguments(columns: list[_Column]) -> str:
            parts = []
            for c in columns:
                if processors is None:
                    read = f"row[{c.name!r}]"
                else:
                    index = next(position)
                    read = f"row[{index}]"
                    if processors[index] is not None:
                        namespace[f"driver_{c.name}"] = processors[index]
                        read = f"driver_{c.name}({read})"
                if c.from_db is not None:
                    namespace[f"from_{c.name}"] = c.from_db
                    read = f"from_{c.name}({read})"
                parts.append(f"{c.name}={read}")
            return ", ".join(parts)

        parts = [arguments(self._read_own)]
        for name, kind, columns in self._read_nested:
            namespace[f"kind_{name}"] = kind
            parts.append(f"{name}=kind_{name}({arguments(columns)})")
        source = f"def load(row):\n    return cls({', '.join(p for p in parts if p)})\n"
        exec(source, namespace)
        load: Callable[[Any], T] = namespace["load"]
        load.__doc__ = f"A {self._cls.__name__} from its row."
        return load


def _out(value: Any, column: _Column) -> Any:
    return value if column.to_db is None else column.to_db(value)


JOB_JSON = ("runner_config", "trigger_config", "retry_policy", "labels", "notify")

JOBS = RowMapper(Job, jobs, nested={"spec": JobDefinition}, json_columns=JOB_JSON)
RUNS = RowMapper(Run, runs, nested={"output": RunOutput}, json_columns=("overrides",))
#: Runs without their captured payloads (lists, ``last_run``).
RUN_SUMMARIES = RowMapper(
    Run, runs, nested={"output": RunOutput}, json_columns=("overrides",), omit=PAYLOAD_FIELDS
)
EVENTS = RowMapper(RunEvent, run_events, json_columns=("data",))
SESSIONS = RowMapper(Session, llm_sessions)
SESSION_MESSAGES = RowMapper(SessionMessage, llm_session_messages, json_columns=("content",))
