"""One turn at a time: a file lock under `<home>/run/loop.lock`.

A turn (and the demo, across its turns) holds the lock. The trigger service's action takes
it without waiting: when a turn is already running, the new labels simply go into the next
export, so it does not start a second turn beside it. Re-entrant within a process.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from flywheel.settings import Settings

_held: dict[str, tuple[int, int]] = {}  # path -> (fd, depth)


BUSY_EXIT = 75  # `flywheel loop run --no-wait` exits with this when a turn is already running


class Busy(RuntimeError):
    """Another process is running a turn."""


@contextmanager
def loop_lock(settings: Settings, wait: bool = True):
    path = str(settings.run_dir / "loop.lock")
    if path in _held:  # this process holds it already
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"a turn is already running (lock {path})") from None
    _held[path] = (fd, 1)
    try:
        yield
    finally:
        del _held[path]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
