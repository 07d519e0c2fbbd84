"""Storage: the facade (``base``), its database (``database``) and in-memory
(``memory``) implementations, and what lies behind the database one: tables,
row mapping, statements per table, the group-commit gateway, engines, migrations."""

from termjobs.storage.base import (
    DuplicateReceipt,
    DuplicateRun,
    JobFilters,
    JobView,
    NameTaken,
    NotOwner,
    Page,
    PendingNotification,
    Receipt,
    RunFilters,
    ScheduleEntry,
    SessionTranscript,
    Storage,
    StorageClosed,
    StorageError,
    StorageRefused,
    StorageUnavailable,
)

__all__ = [
    "DuplicateReceipt",
    "DuplicateRun",
    "JobFilters",
    "JobView",
    "NameTaken",
    "NotOwner",
    "Page",
    "PendingNotification",
    "Receipt",
    "RunFilters",
    "ScheduleEntry",
    "SessionTranscript",
    "Storage",
    "StorageClosed",
    "StorageError",
    "StorageRefused",
    "StorageUnavailable",
]
