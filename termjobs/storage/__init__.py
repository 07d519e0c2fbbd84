"""Storage: the facade (``base``), its database (``database``) and in-memory
(``memory``) implementations, and what lies behind the database one: tables,
row mapping, statements per table, the group-commit gateway, engines, migrations."""

from termjobs.storage.base import (
    DuplicateRun,
    JobFilters,
    JobView,
    NameTaken,
    Page,
    ScheduleEntry,
    SessionTranscript,
    Storage,
    StorageClosed,
    StorageError,
    StorageRefused,
    StorageUnavailable,
)

__all__ = [
    "DuplicateRun",
    "JobFilters",
    "JobView",
    "NameTaken",
    "Page",
    "ScheduleEntry",
    "SessionTranscript",
    "Storage",
    "StorageClosed",
    "StorageError",
    "StorageRefused",
    "StorageUnavailable",
]
