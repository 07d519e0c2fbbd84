"""This server as a member of a cluster on PostgreSQL.

* **Membership.** At start the server adds its row to ``workers``; every
  ``lease / 3`` seconds it renews its heartbeat, and with it its lease on every job it
  owns (one statement). A server whose heartbeat is older than the lease is dead. A
  server that finds its own lease lapsed (it stalled: SIGSTOP, a long pause, a cut
  network) stops everything it runs at once, since another server may be running its
  jobs by now, and then rejoins under the same id, taking back only what nobody took.
  If the database cannot be reached for a whole lease, the server assumes the same.
* **Placement.** Jobs belong to live servers by rendezvous hashing
  (``placement``). On every heartbeat, and at once when a server joins or leaves
  (NOTIFY), each server claims the jobs without a live owner that hash to it
  (*takeover*: their unfinished runs are ended as lost, retried per policy, and fires
  missed meanwhile follow the misfire policy), adopts jobs given to it, and hands the
  jobs that now hash to another server over to it once they are idle.
* **Fencing.** Whatever records a fire or starts a run checks, in its own
  transaction, that this server still owns the job with a fresh lease
  (``storage.sql.cluster.check_owners``), so a server that lost its jobs cannot act on
  them even before it notices.

The supervisor does the work on jobs (:class:`Owner`); this module decides which.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import trio

from termjobs.cluster import placement
from termjobs.runners.base import OrphanReaper
from termjobs.storage import StorageError
from termjobs.storage.database import SqlStorage

logger = logging.getLogger(__name__)

#: Most orphaned jobs looked at in one round (the rest in the next ones).
ORPHAN_BATCH = 20_000
#: Every this many rounds, every job this server owns is checked against what it runs.
FULL_CHECK_ROUNDS = 12
#: Servers (and answered requests) silent this long are forgotten.
FORGET_AFTER = dt.timedelta(days=1)


def pid_namespace() -> str:
    """Where this process's pids mean something: the kernel boot and pid namespace
    (two servers that share it can see each other's processes). The environment
    variable ``TERMJOBS_CLUSTER_NAMESPACE`` replaces it (a server alone in its own, as
    if on another host: tests use it to exercise the lease alone)."""
    override = os.environ.get("TERMJOBS_CLUSTER_NAMESPACE")
    if override:
        return override
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"unknown:{socket.gethostname()}:{os.getpid()}"  # matches no other server
    return f"{boot}/{namespace}"


def server_alive(pid: int) -> bool:
    """Whether ``pid`` (in this pid namespace) is a live termjobs server."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except (OSError, IndexError):
        return False
    return state != b"Z" and (b"termjobs" in cmdline or b"term-llm" in cmdline)


class Owner(Protocol):
    """What the cluster asks of the supervisor."""

    def owned(self) -> set[str]:
        """The jobs this server runs now (awake or hibernating)."""
        ...

    async def adopt(self, job_ids: Sequence[str]) -> None:
        """Start running these jobs (just taken over or given to this server)."""
        ...

    async def release(self, job_ids: Sequence[str]) -> list[str]:
        """Stop running those of these jobs that are idle; the ones let go."""
        ...

    def handed_over(self, job_ids: Sequence[str]) -> None:
        """The released jobs have their new owner recorded."""
        ...

    async def abandon(self, reason: str) -> None:
        """Stop every run and let every job go (the lease lapsed)."""
        ...


class ClusterNode:
    """Membership and placement of one server (see the module docstring)."""

    def __init__(
        self,
        storage: SqlStorage,
        owner: Owner,
        *,
        worker_id: str,
        host: str,
        pid: int,
        url: str,
        version: str,
        lease_s: float,
        reapers: Sequence[OrphanReaper] = (),
    ) -> None:
        self.storage = storage
        self._reapers = reapers
        self.owner = owner
        self.worker_id = worker_id
        self.host, self.pid, self.url, self.version = host, pid, url, version
        self.namespace = pid_namespace()
        self.lease_s = lease_s
        self.live: list[str] = []
        self._since: dt.datetime | None = None
        self._wake = trio.Event()
        self._waiting_moves: dict[str, str] = {}
        self._last_beat = trio.current_time()
        self.heartbeat_fresh = False
        self.stopping = False
        self._rounds = 0

    @property
    def leader(self) -> bool:
        """Whether this server is the oldest live one (it runs retention)."""
        return bool(self.live) and self.live[0] == self.worker_id

    # ---------------------------------------------- what the supervisor asks

    def owner_for(self, job_id: str) -> str:
        """The live server a new job goes to (this one, if it knows of no other)."""
        return placement.owner_of(job_id, self.live) or self.worker_id

    async def owns(self, job_id: str) -> bool:
        """Whether this server owns the job, with a fresh lease (the database says)."""
        found = await self.storage.job_owner(job_id, lease_s=self.lease_s)
        return found is not None and found == (self.worker_id, True)

    def job_lost(self, job_id: str) -> None:
        """A write found another server owns the job: look at everything owned again."""
        self._since = None
        self.rebalance_soon()

    def rebalance_soon(self, _payload: str = "") -> None:
        """Look at membership and placement now (a server joined or left, a job was
        given to this server, a write found a job gone)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, take this server's share, then keep membership and placement current
        until cancelled."""
        await self.storage.join_cluster(
            self.worker_id,
            host=self.host,
            pid=self.pid,
            namespace=self.namespace,
            url=self.url,
            version=self.version,
        )
        self._last_beat = trio.current_time()
        self.heartbeat_fresh = True
        logger.info("joined the cluster as %s (lease %gs)", self.worker_id, self.lease_s)
        await self._reap_strays()
        await self._round()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            while True:
                with trio.move_on_after(self.lease_s / 3):
                    await self._wake.wait()
                self._wake = trio.Event()
                try:
                    await self._round()
                except StorageError as exc:
                    logger.warning("cluster placement skipped this round: %s", exc)

    async def leave(self) -> None:
        """Tell the others this server is gone, so they take its jobs at once."""
        self.stopping = True
        try:
            await self.storage.leave_cluster(self.worker_id)
            logger.info("left the cluster")
        except StorageError as exc:
            logger.warning("could not say this server left (%s): its jobs move after the lease", exc)

    async def _reap_strays(self) -> None:
        """Kill what runs of a previous server on this host left running (it was killed;
        another server has ended those runs as lost by now, or will): whatever runs of
        this database no live server is executing."""
        for reaper in self._reapers:
            marked = await trio.to_thread.run_sync(reaper.local_runs)
            if not marked:
                continue
            # Only runs of this database: another deployment's runs on this host are not ours.
            stray = sorted(await self.storage.runs_left_behind(sorted(marked), lease_s=self.lease_s))
            if stray:
                killed = await trio.to_thread.run_sync(reaper.reap_orphans, stray)
                logger.warning("killed %d process(es) of %d run(s) no live server runs", killed, len(stray))

    # -------------------------------------------------------------- heartbeat

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.lease_s / 3)
            if self.stopping:
                return  # left the cluster: never come back to life
            try:
                renewed = await self.storage.heartbeat(self.worker_id, lease_s=self.lease_s)
            except StorageError as exc:
                silent = trio.current_time() - self._last_beat
                logger.warning("heartbeat failed (%s); silent for %.1fs", exc, silent)
                if silent > self.lease_s and self.heartbeat_fresh:
                    self.heartbeat_fresh = False
                    await self._lapsed(f"the database was unreachable for {silent:.0f}s")
                continue
            if renewed:
                if not self.heartbeat_fresh:
                    await self._rejoin()
                self._last_beat = trio.current_time()
                self.heartbeat_fresh = True
                continue
            self.heartbeat_fresh = False
            await self._lapsed("its lease lapsed (the server stalled)")
            await self._rejoin()
            self._last_beat = trio.current_time()
            self.heartbeat_fresh = True

    async def _lapsed(self, why: str) -> None:
        logger.error("this server lost its jobs: %s; stopping its runs", why)
        await self.owner.abandon(why)
        self._since = None  # everything still ours is adopted again after rejoining
        self._waiting_moves.clear()

    async def _rejoin(self) -> None:
        await self.storage.rejoin_cluster(self.worker_id)
        logger.warning("rejoined the cluster as %s", self.worker_id)
        self.rebalance_soon()

    # -------------------------------------------------------------- placement

    async def _round(self) -> None:
        if self.stopping or not self.heartbeat_fresh:
            return
        live = await self.storage.live_servers(lease_s=self.lease_s)
        changed = live != self.live
        if changed:
            joined = sorted(set(live) - set(self.live))
            left = sorted(set(self.live) - set(live))
            if self.live:
                logger.info(
                    "cluster: %d server(s); joined %s; gone %s", len(live), joined or "-", left or "-"
                )
            self.live = live
        if self.worker_id not in live:
            return  # the heartbeat task deals with a lapsed lease
        if await self._bury_neighbours():
            self.live = live = await self.storage.live_servers(lease_s=self.lease_s)
        await self._take_over()
        self._rounds += 1
        if self._rounds % FULL_CHECK_ROUNDS == 0:
            self._since = None  # now and then, compare every job owned, not just new ones
            if self.leader:
                await self.storage.forget_servers(older_than=FORGET_AFTER)
        await self._adopt_given()
        if changed:
            self._waiting_moves = placement.moves(self.owner.owned(), self.worker_id, live)
        if self._waiting_moves:
            await self._hand_over()

    async def _bury_neighbours(self) -> bool:
        """Servers in this pid namespace whose process is gone (killed: this server may
        be its restart) are dead now, not a lease from now; whether there were any."""
        found = await self.storage.neighbours(self.worker_id, self.namespace, lease_s=self.lease_s)
        dead = [worker_id for worker_id, pid in found if not server_alive(pid)]
        if dead:
            await self.storage.mark_gone(dead)
            logger.info("%d server(s) on this host are gone (their process died): %s", len(dead), dead)
        return bool(dead)

    async def _take_over(self) -> None:
        orphans = await self.storage.orphaned_jobs(lease_s=self.lease_s, limit=ORPHAN_BATCH)
        wanted = placement.mine(orphans, self.worker_id, self.live)
        if not wanted:
            return
        claimed = await self.storage.claim_jobs(self.worker_id, wanted, lease_s=self.lease_s)
        if claimed:
            logger.info("took over %d job(s) without a live server", len(claimed))
            await self.owner.adopt(claimed)
        if len(orphans) == ORPHAN_BATCH:
            self.rebalance_soon()

    async def _adopt_given(self) -> None:
        given, self._since = await self.storage.jobs_given(self.worker_id, since=self._since)
        owned = self.owner.owned()  # a set built afresh: once, not once per job
        new = [job_id for job_id in given if job_id not in owned]
        if new:
            await self.owner.adopt(new)

    async def _hand_over(self) -> None:
        owned = self.owner.owned()
        moves = {
            job_id: target
            for job_id, target in self._waiting_moves.items()
            if target in self.live and job_id in owned
        }
        self._waiting_moves = moves
        if not moves:
            return
        released = await self.owner.release(list(moves))
        if not released:
            return
        try:
            moved = await self.storage.hand_over(
                self.worker_id, {job_id: moves[job_id] for job_id in released}
            )
        except StorageError:
            await self.owner.adopt(released)  # still ours: run them again
            raise
        self.owner.handed_over(released)
        for job_id in moved:
            self._waiting_moves.pop(job_id, None)
        kept = [job_id for job_id in released if job_id not in set(moved)]
        if kept:
            logger.info("%d job(s) changed owner while being handed over", len(kept))
        logger.info("handed %d idle job(s) over to other servers", len(moved))
