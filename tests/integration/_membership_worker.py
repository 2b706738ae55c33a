"""A worker process for test_membership_kill: joins a group and logs which keys it owns.

Usage: ``python _membership_worker.py URL GROUP NAME LOG KEYS LEASE HEARTBEAT SAMPLE``.

It opens the backend at URL, joins GROUP as NAME through a :class:`ShardAssignment`
(``with``: it heartbeats on a thread and leaves on exit), and every SAMPLE seconds appends
one JSON line to LOG::

    {"t": ..., "t_end": ..., "version": ..., "members": [...], "expires_in": ...,
     "owned": [indices i of the keys "WH-%04d" % i it owns]}

``t`` is the wall-clock time (``time.time()``) before the sample and ``t_end`` after it;
``expires_in`` is its own copy of its lease, read after ``t``. A sample during which a
heartbeat brought a new view is thrown away and taken again, so every line describes one
view. Each line is written with a single ``os.write``, so a kill leaves no torn line. On
SIGTERM it leaves the group and appends ``{"event": "left", "t": ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import invresilience as ir

if TYPE_CHECKING:
    from collections.abc import Callable


def main(argv: list[str]) -> None:
    """Run the worker until SIGTERM."""
    url, group, name, log_path, count, lease, heartbeat, sample = argv
    keys = [f"WH-{i:04d}" for i in range(int(count))]

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(record: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    with ir.open_backend(url) as backend:
        assignment = ir.ShardAssignment(
            backend.membership(group),
            name,
            lease=float(lease),
            heartbeat=float(heartbeat),
        )
        try:
            with assignment:  # joins; leaves when SIGTERM ends the loop
                _sample(assignment, keys, float(sample), write)
        except SystemExit:
            pass
    write({"event": "left", "t": time.time()})


def _sample(
    assignment: ir.ShardAssignment,
    keys: list[str],
    every: float,
    write: Callable[[dict[str, Any]], None],
) -> None:
    while True:
        view = assignment.view
        t = time.time()
        left = assignment.expires_in()
        owned = [i for i, key in enumerate(keys) if assignment.owns(key)]
        t_end = time.time()
        if view is None or assignment.view is not view:
            continue  # a heartbeat adopted a new view meanwhile: sample again
        write(
            {
                "t": t,
                "t_end": t_end,
                "version": view.version,
                "members": sorted(view.members),
                "expires_in": left,
                "owned": owned,
            }
        )
        time.sleep(every)


if __name__ == "__main__":
    main(sys.argv[1:])
