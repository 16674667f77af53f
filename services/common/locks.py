"""A lock one process holds on a file for as long as it runs, with its holder written in it, so a
process that is refused can say who has it."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class LockHeld(Exception):
    """Another process holds the lock; `holder` is what it wrote in the file."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def hold_exclusive(path: Path, holder: str) -> IO[str]:
    """An exclusive lock on `path` (made if absent), held while the returned file stays open,
    with `holder` written in it; `LockHeld` at once when another process holds it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        held_by = handle.read().strip()
        handle.close()
        raise LockHeld(held_by) from None
    handle.seek(0)
    handle.truncate()
    handle.write(holder)
    handle.flush()
    return handle
