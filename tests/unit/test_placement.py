"""Rendezvous placement: every server computes the same owner; a join or a leave moves
only the jobs it must."""

from __future__ import annotations

from collections import Counter

from termjobs.cluster.placement import mine, moves, owner_of

JOBS = [f"job_{i:06d}" for i in range(3000)]


def test_every_job_has_one_owner_and_the_jobs_spread_evenly() -> None:
    live = ["worker_a", "worker_b", "worker_c"]
    owners = Counter(owner_of(job, live) for job in JOBS)
    assert set(owners) == set(live)
    assert all(abs(count - 1000) < 100 for count in owners.values()), owners  # within 10 %
    assert (
        sorted(mine(JOBS, "worker_a", live) + mine(JOBS, "worker_b", live) + mine(JOBS, "worker_c", live))
        == JOBS
    )
    assert owner_of("job_x", list(reversed(live))) == owner_of("job_x", live)  # order does not matter
    assert owner_of("job_x", []) is None


def test_a_joining_server_takes_a_share_only_from_the_others() -> None:
    before = ["worker_a", "worker_b"]
    after = [*before, "worker_c"]
    moved = {job for job in JOBS if owner_of(job, before) != owner_of(job, after)}
    assert all(owner_of(job, after) == "worker_c" for job in moved)
    assert 800 < len(moved) < 1200
    from_a = moves(mine(JOBS, "worker_a", before), "worker_a", after)
    assert set(from_a.values()) == {"worker_c"} and set(from_a) <= moved


def test_a_leaving_server_only_gives_up_its_own_jobs() -> None:
    before = ["worker_a", "worker_b", "worker_c"]
    after = ["worker_a", "worker_b"]
    moved = {job for job in JOBS if owner_of(job, before) != owner_of(job, after)}
    assert moved == {job for job in JOBS if owner_of(job, before) == "worker_c"}
