"""Statements on the ``notifications`` (webhook outbox) and ``receipts`` tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa

from termjobs.model import Run
from termjobs.notify import NotifyTarget
from termjobs.storage.base import DuplicateReceipt, PendingNotification, Receipt
from termjobs.storage.sql import WriteTx
from termjobs.storage.tables import jobs, notifications, receipts


def enqueue(tx: WriteTx, run: Run, targets: Iterable[NotifyTarget], *, now: dt.datetime) -> None:
    """Queue a webhook to every target that wants ``run``'s (final) status."""
    rows = [
        {"run_id": run.id, "job_id": run.job_id, "url": t.url, "secret": t.secret, "created_at": now}
        for t in targets
        if t.wants(run.status)
    ]
    if rows:
        tx.conn.execute(notifications.insert(), rows)


def pending(conn: sa.Connection, *, limit: int, owner: str | None = None) -> list[PendingNotification]:
    """Undelivered webhooks, oldest first (with ``owner``: of the jobs that server owns)."""
    query = sa.select(notifications).order_by(notifications.c.id).limit(limit)
    if owner is not None:
        owned = sa.select(jobs.c.id).where(jobs.c.owner_id == owner)
        query = query.where(notifications.c.job_id.in_(owned))
    return [PendingNotification(**row) for row in conn.execute(query).mappings()]


def remove(tx: WriteTx, notification_id: int) -> bool:
    return tx.conn.execute(notifications.delete().where(notifications.c.id == notification_id)).rowcount == 1


def store_receipt(tx: WriteTx, receipt: Receipt, *, expired_before: dt.datetime) -> None:
    """Store ``receipt``; :class:`DuplicateReceipt` if its key is in use (an expired
    receipt with the key is replaced)."""
    tx.conn.execute(
        receipts.delete().where(receipts.c.key == receipt.key, receipts.c.created_at < expired_before)
    )
    if tx.conn.execute(sa.select(receipts.c.key).where(receipts.c.key == receipt.key)).first() is not None:
        raise DuplicateReceipt(f"the Idempotency-Key {receipt.key!r} was used already")
    tx.conn.execute(
        receipts.insert().values(
            key=receipt.key,
            fingerprint=receipt.fingerprint,
            status=receipt.status,
            body=receipt.body,
            created_at=receipt.created_at,
        )
    )


def find_receipt(conn: sa.Connection, key: str, *, since: dt.datetime) -> Receipt | None:
    query = sa.select(receipts).where(receipts.c.key == key, receipts.c.created_at >= since)
    row = conn.execute(query).mappings().first()
    return None if row is None else Receipt(**row)


def delete_receipts(tx: WriteTx, *, before: dt.datetime) -> int:
    return tx.conn.execute(receipts.delete().where(receipts.c.created_at < before)).rowcount
