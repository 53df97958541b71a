"""Files written whole or not at all: temp file, fsync, rename; signals held meanwhile.

    write_bytes_atomic(path, data)     # path holds the old bytes or the new, never a part
    with signals_held(): ...           # SIGINT/SIGTERM wait until the block is done

A write that fails (a full disk, say) removes its temp file and raises the OSError; a
SIGINT or SIGTERM that arrives during a write is delivered when the write is done, so a
stopped run never leaves a half-renamed checkpoint or a stray .tmp file.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

HELD = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_held():
    """Block SIGINT and SIGTERM in this thread for the block (their handlers run right after)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_bytes_atomic(path: Path, data, before_replace=None) -> None:
    """Write `data` (bytes or a buffer) to `path` via a temp file in the same folder, fsync'd,
    then os.replace. `before_replace()` runs just before the rename (e.g. keeping the old file)."""
    path = Path(path)
    tmp = temp_path(path)
    with signals_held():
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial temp file behind
            raise
