"""One writer per directory: a lock file that a second process is refused, and that a killed one
releases (the operating system drops the lock with the process, so no stale lock survives kill -9)."""

import os
from pathlib import Path

from filelock import FileLock, Timeout

from core.errors import UserError

LOCK_NAME = ".lock"


class DirectoryLock:
    """Hold ``directory/.lock`` for the duration of a ``with`` block, without waiting.

    Args:
        directory: created if missing.
        what: the kind of writer, for the error message ("train.py", "data collection").

    Raises:
        UserError: another process holds the lock.
    """

    def __init__(self, directory: str | Path, what: str):
        self.directory = Path(directory)
        self.what = what
        self._lock: FileLock | None = None

    def __enter__(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        self._lock = FileLock(str(path), timeout=0)
        try:
            self._lock.acquire()
        except Timeout:
            holder = path.with_name(LOCK_NAME + ".pid")
            pid = holder.read_text().strip() if holder.is_file() else "unknown"
            raise UserError(f"{self.directory} is in use by another {self.what} (pid {pid}); wait for it to finish "
                            "or use another directory") from None
        (self.directory / (LOCK_NAME + ".pid")).write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc) -> bool:
        if self._lock is not None:
            self._lock.release()
        return False
