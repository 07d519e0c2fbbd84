"""The end of a write transaction on PostgreSQL, in one round trip.

Before a transaction commits, up to three statements remain: the run events it holds
(``events.send_held``), the cluster's fence (``cluster.check_owners``) and the
announcement of its newest event id to the other servers. Each was a round trip of
its own, and the writer thread waits out every round trip (and then waits for the
GIL, which the busy event loop holds): they are sent together in one pipeline, and
their answers read once it has synced.
"""

from __future__ import annotations

from termjobs.storage.sql import WriteTx, cluster, driver_errors, events, returned_rows

#: The newest event id this transaction inserted: the session's last ``nextval`` of
#: the events' sequence (every event id is one).
_ANNOUNCE = "SELECT pg_notify(%s, currval(pg_get_serial_sequence('run_events', 'id'))::text)"


def seal(tx: WriteTx, events_channel: str | None) -> None:
    """Insert the events ``tx`` still holds, check its fence (:class:`NotOwner` rolls
    it back) and announce its newest event on ``events_channel`` (delivered if it
    commits): what ``tx`` needs of the three, pipelined."""
    held = events.take_held(tx)
    fences = tx.fences if tx.fences is not None and tx.fences.job_ids else None
    order = tx.order
    announce = events_channel is not None and order is not None and (held is not None or order.newest > 0)
    if held is None and fences is None and not announce:
        return
    driver = tx.conn.connection.driver_connection
    assert driver is not None
    inserts, checks = driver.cursor(), driver.cursor()  # their answers read after the sync
    with driver_errors(tx.conn.dialect), driver.pipeline():
        if held is not None:
            inserts.executemany(held[0], held[1], returning=True)
        if fences is not None:
            checks.execute(*cluster.owners_check(fences))
        if announce:
            driver.execute(_ANNOUNCE, (events_channel,))
    with driver_errors(tx.conn.dialect):
        if held is not None:
            events.join_held(tx, held[2], returned_rows(inserts))
        if fences is not None:
            cluster.owners_checked(fences, checks.fetchall())
