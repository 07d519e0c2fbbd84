"""Identifiers: the reference system's shape, never repeated, not shared with a fork."""

from __future__ import annotations

import os
import re

from termjobs.model import new_job_id, new_run_id


def test_ids_have_twelve_base64url_characters_and_do_not_repeat() -> None:
    ids = [new_run_id() for _ in range(20_000)]  # several refills of the random pool
    assert all(re.fullmatch(r"run_[A-Za-z0-9_-]{12}", run_id) for run_id in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"job_[A-Za-z0-9_-]{12}", new_job_id())


def test_a_forked_child_never_draws_the_ids_its_parent_will() -> None:
    new_run_id()  # the pool holds random bytes the parent has not used yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running anything else
        try:
            os.write(write, ",".join(new_run_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [new_run_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
