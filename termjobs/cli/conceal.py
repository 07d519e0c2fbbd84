"""Hiding the server's secrets from ``/proc``.

Any process of the same user (every job, unless ``--run-as`` is used) can read the
server's ``/proc/PID/cmdline`` and ``/proc/PID/environ``. Both show the memory the
kernel set up at ``exec``: removing a variable from ``os.environ`` (or ``argv``) does
not change what they show. So, after reading its token, the server overwrites it
there, in place, through ``/proc/self/mem`` (Linux only; elsewhere nothing happens).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

logger = logging.getLogger(__name__)

#: Variables that carry the token; removed from the server's environment once read.
TOKEN_VARIABLES = ("TERM_LLM_SERVE_TOKEN", "TERM_LLM_JOBS_TOKEN")


def conceal(secrets: Iterable[str]) -> int:
    """Overwrite each secret (at least 4 characters) in this process's command line
    and initial environment with ``x``; how many places were changed."""
    needles = [s.encode() for s in secrets if s and len(s) >= 4]
    if not needles:
        return 0
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # Fields 48-51 of proc(5): arg_start, arg_end, env_start, env_end.
        arg_start, arg_end, env_start, env_end = (int(value) for value in fields[45:49])
        changed = 0
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in ((arg_start, arg_end), (env_start, env_end)):
                mem.seek(start)
                original = mem.read(end - start)
                hidden = original
                for needle in needles:
                    hidden = hidden.replace(needle, b"x" * len(needle))
                if hidden != original:
                    mem.seek(start)
                    mem.write(hidden)
                    changed += 1
        return changed
    except (OSError, ValueError, IndexError) as exc:
        logger.warning("could not hide the token from /proc (%s); prefer --token-file", exc)
        return 0


def drop_token_variables() -> None:
    """Remove the token variables from this process's environment (so nothing started
    later, with the environment copied, inherits them)."""
    for name in TOKEN_VARIABLES:
        os.environ.pop(name, None)
